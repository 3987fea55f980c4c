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

}  // namespace etap::sm90
