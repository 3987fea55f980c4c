// FP8 (e4m3) KV tiles: shared-memory layout, and how the two GEMMs of a tile read it.
//
// A 64-row tile of e4m3 cache rows takes 36864 bytes:
//   latent (512 B per row): 4 chunks of [64 rows][128 B], 128B-swizzled (16-byte unit ^= row % 8)
//   rope   (64 B per row):  [64 rows][64 B], 64B-swizzled (unit ^= (row / 2) % 4)
// exactly what the TMA boxes (128 x rows, 64 x rows) write, and what cp.async writes by hand.
//
// S^T = K.Q^T runs as an e4m3 WGMMA straight from this tile (K-major, as TMA wrote it) against
// Q split into two e4m3 rows per query row, hi + lo / 16 (about bf16's precision), each row
// scaled so its max |q| maps to 240; the two halves are recombined in fp32 with the row's scale.
// O^T = V^T.P^T needs V^T as A, which is not K-major, and WGMMA reads 8-bit operands only
// K-major, so V^T comes from registers: each thread owns 16 contiguous latent dims of its
// warp's 128, loads them for 4 KV rows per k-block, transposes 4x4 byte blocks in registers and
// converts e4m3 -> fp16 (exact); accumulator row g + 8h of atom mi then holds latent dim
// 128*warp + 16*g + 2*mi + h (dv_of_fp8), undone when the output is written. P is fp16.
// With the dims split (rows split over the warpgroups) each warpgroup converts only its 256
// dims, 8 contiguous bytes per thread and row (dv_of_fp8_half).
#pragma once
#include <cuda_fp16.h>

#include <cstdint>

#include "../etap_params.h"

namespace etap::sm90 {

constexpr int kFp8ChunkBytes = kTileKV * 128;                 // one 128-column latent chunk
constexpr int kFp8RopeOffset = (kDimV / 128) * kFp8ChunkBytes;  // 32768
constexpr int kFp8TileBytes = kFp8RopeOffset + kTileKV * kDimRope;  // 36864

// Byte offset of 16-byte unit `unit` (0..31) of the latent part of tile row `row`.
__host__ __device__ __forceinline__ int fp8_nope_offset(int row, int unit) {
  return (unit >> 3) * kFp8ChunkBytes + row * 128 + (((unit & 7) ^ (row & 7)) << 4);
}
// Byte offset of 16-byte unit `unit` (0..3) of the rope part of tile row `row`.
__host__ __device__ __forceinline__ int fp8_rope_offset(int row, int unit) {
  return kFp8RopeOffset + row * 64 + ((unit ^ ((row >> 1) & 3)) << 4);
}

// Latent dim held by accumulator value (row half h = 0/1) of atom mi for a thread of `warp`
// whose lane / 4 is g (the O^T rows are permuted so each thread loads 16 contiguous bytes).
__device__ __forceinline__ int dv_of_fp8(int warp, int g, int mi, int h) {
  return 128 * warp + 16 * g + 2 * mi + h;
}

// The same with the dims split over the warpgroups (consumer kSplitDims): 8 contiguous dims per
// thread, in warpgroup wg's half of the 512.
__device__ __forceinline__ int dv_of_fp8_half(int wg, int warp, int g, int mi, int h) {
  return 256 * wg + 64 * warp + 8 * g + 2 * mi + h;
}

__device__ __forceinline__ uint2 lds64(const void* smem) {
  uint2 v;
  asm volatile("ld.shared.v2.b32 {%0, %1}, [%2];\n"
               : "=r"(v.x), "=r"(v.y)
               : "r"(static_cast<uint32_t>(__cvta_generic_to_shared(smem))));
  return v;
}

__device__ __forceinline__ uint4 lds128(const void* smem) {
  uint4 v;
  asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(static_cast<uint32_t>(__cvta_generic_to_shared(smem))));
  return v;
}

__device__ __forceinline__ void sts128(void* smem, uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"r"(static_cast<uint32_t>(__cvta_generic_to_shared(smem))),
               "r"(a), "r"(b), "r"(c), "r"(d)
               : "memory");
}

__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel) {
  uint32_t d;
  asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
  return d;
}

// Four e4m3 bytes [b3 b2 b1 b0] -> fp16x2 (b1:b0) and fp16x2 (b3:b2); exact.
__device__ __forceinline__ void e4m3x4_to_f16x4(uint32_t x, uint32_t& lo, uint32_t& hi) {
  asm("{\n .reg .b16 l, h;\n mov.b32 {l, h}, %2;\n"
      " cvt.rn.f16x2.e4m3x2 %0, l;\n cvt.rn.f16x2.e4m3x2 %1, h;\n}\n"
      : "=r"(lo), "=r"(hi)
      : "r"(x));
}

// V^T A-fragment registers from word j (latent dims 4j..4j+3) of the four KV rows
// {2q, 2q+1, 2q+8, 2q+9} a thread holds (rows = the words of those rows): a 4x4 byte
// transpose into (dim, two KV rows) pairs, converted to fp16. Atom a0 gets dims 4j, 4j+1 (its
// rows g, g+8), atom a1 dims 4j+2, 4j+3; each atom's registers are [k 2q..2q+1 | k 2q+8..2q+9].
__device__ __forceinline__ void vt_word_to_f16(const uint32_t* row0, const uint32_t* row1, const uint32_t* row2,
                                               const uint32_t* row3, int j, uint32_t* a0, uint32_t* a1) {
  const uint32_t r0 = row0[j], r1 = row1[j], r2 = row2[j], r3 = row3[j];
  e4m3x4_to_f16x4(prmt(r0, r1, 0x5140), a0[0], a0[1]);
  e4m3x4_to_f16x4(prmt(r2, r3, 0x5140), a0[2], a0[3]);
  e4m3x4_to_f16x4(prmt(r0, r1, 0x7362), a1[0], a1[1]);
  e4m3x4_to_f16x4(prmt(r2, r3, 0x7362), a1[2], a1[3]);
}

// Four floats -> four e4m3 bytes [d c b a] (round to nearest, saturating to +-448).
__device__ __forceinline__ uint32_t f32x4_to_e4m3x4(float a, float b, float c, float d) {
  uint32_t r;
  asm("{\n .reg .b16 lo, hi;\n cvt.rn.satfinite.e4m3x2.f32 lo, %2, %1;\n"
      " cvt.rn.satfinite.e4m3x2.f32 hi, %4, %3;\n mov.b32 %0, {lo, hi};\n}\n"
      : "=r"(r)
      : "f"(a), "f"(b), "f"(c), "f"(d));
  return r;
}

__device__ __forceinline__ void e4m3x4_to_f32x4(uint32_t x, float (&f)[4]) {
  uint32_t lo, hi;
  e4m3x4_to_f16x4(x, lo, hi);
  const __half2 l = *reinterpret_cast<const __half2*>(&lo), h = *reinterpret_cast<const __half2*>(&hi);
  f[0] = __low2float(l);
  f[1] = __high2float(l);
  f[2] = __low2float(h);
  f[3] = __high2float(h);
}

}  // namespace etap::sm90
