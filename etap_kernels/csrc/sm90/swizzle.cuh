// Byte offsets in 16-bit K-major operand tiles with the 128-byte swizzle, spelled out for the
// stores that go through the shared window (a swizzled CuTe tensor turns them into generic
// stores with 64-bit address math). tests/test_swizzle_offsets.py checks them against CuTe.
#pragma once

namespace etap::sm90 {

// GMMA::Layout_K_SW128_Atom<16-bit> tiled over `rows` rows from a 1024-byte-aligned base:
// 64-column chunks of [rows][128 B], 16-byte unit u of row r at unit u ^ (r % 8). The offset of
// the unit holding elements 8u .. 8u + 7 of row r.
__host__ __device__ constexpr int sw128_unit_offset(int r, int u, int rows = 64) {
  return (u >> 3) * (rows * 128) + r * 128 + (((u & 7) ^ (r & 7)) << 4);
}

// P^T of the transposed consumers: element (n, m) of a 16-bit [rows][64] K-major tile sits at
// byte (n / 8) 1024 + (n % 8) 128 + ((m / 8) ^ (n % 8)) 16 + (m % 8) 2. A thread's S^T
// accumulator value (v0, v1, j) is element n = 2 (lane % 4) + v0 + 8 j, m = 16 warp + lane / 4
// + 8 v1, at pt_thread_base(warp, lane) + pt_value_offset(v0, v1, j): one base per thread,
// the rest constants (through the layout, ptxas kept 16 addresses live and spilled them).
__host__ __device__ constexpr int pt_thread_base(int warp, int lane) {
  return 2 * (lane % 4) * 128 + 2 * (warp ^ (lane % 4)) * 16 + 2 * (lane / 4);
}
__host__ __device__ constexpr int pt_value_offset(int v0, int v1, int j) { return j * 1024 + v0 * 128 + ((v0 ^ v1) << 4); }

}  // namespace etap::sm90
