// FP8 (e4m3) KV tiles: shared-memory layout, and the register fragments that feed fp16 WGMMAs.
//
// A 64-row tile of e4m3 cache rows takes 36864 bytes:
//   latent (512 B per row): 4 chunks of [64 rows][128 B], 128B-swizzled (16-byte unit ^= row % 8)
//   rope   (64 B per row):  [64 rows][64 B], 64B-swizzled (unit ^= (row / 2) % 4)
// exactly what the TMA boxes (128 x rows, 64 x rows) write, and what cp.async writes by hand.
//
// WGMMA reads 8-bit A operands only K-major, and V^T (K = KV rows) is not, so both GEMMs take
// A from registers: each consumer thread loads its bytes, converts e4m3 -> fp16 (exact) and
// issues register-A (RS) WGMMAs. Which bytes a thread needs fixes two permutations:
// - S^T = K.Q^T: ldmatrix hands thread (g = lane/4, q = lane%4) the 4 bytes 4q..4q+3 of a
//   16-wide k-block of one row; the fragment wants k = {2q, 2q+1, 2q+8, 2q+9}. So the query's
//   16 dims of every k-block are permuted the same way when Q is converted (logical p <- phys).
// - O^T = V^T.P^T: a thread owns 16 contiguous latent dims of a warp's 128 and transposes 4x4
//   byte blocks (4 KV rows x 4 dims) in registers, so accumulator row g + 8h of atom mi holds
//   latent dim 128*warp + 16*g + 2*mi + h (dv_of_fp8), undone when the output is written.
#pragma once
#include <cstdint>

#include "../etap_params.h"

namespace etap::sm90 {

constexpr int kFp8ChunkBytes = kTileKV * 128;                 // one 128-column latent chunk
constexpr int kFp8RopeOffset = (kDimV / 128) * kFp8ChunkBytes;  // 32768
constexpr int kFp8TileBytes = kFp8RopeOffset + kTileKV * kDimRope;  // 36864

// Byte offset of 16-byte unit `unit` (0..31) of the latent part of tile row `row`.
__device__ __forceinline__ int fp8_nope_offset(int row, int unit) {
  return (unit >> 3) * kFp8ChunkBytes + row * 128 + (((unit & 7) ^ (row & 7)) << 4);
}
// Byte offset of 16-byte unit `unit` (0..3) of the rope part of tile row `row`.
__device__ __forceinline__ int fp8_rope_offset(int row, int unit) {
  return kFp8RopeOffset + row * 64 + ((unit ^ ((row >> 1) & 3)) << 4);
}

// Physical position (0..15) inside a 16-dim k-block of logical fragment position p.
__host__ __device__ constexpr int fp8_k_phys(int p) { return 4 * ((p % 8) / 2) + 2 * (p / 8) + p % 2; }

// Latent dim held by accumulator value (row half h = 0/1) of atom mi for a thread of `warp`
// whose lane / 4 is g (the O^T rows are permuted so each thread loads 16 contiguous bytes).
__device__ __forceinline__ int dv_of_fp8(int warp, int g, int mi, int h) {
  return 128 * warp + 16 * g + 2 * mi + h;
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(static_cast<uint32_t>(__cvta_generic_to_shared(smem))));
}

__device__ __forceinline__ uint4 lds128(const void* smem) {
  uint4 v;
  asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(static_cast<uint32_t>(__cvta_generic_to_shared(smem))));
  return v;
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

}  // namespace etap::sm90
