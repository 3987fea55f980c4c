"""The hand-written shared-memory offsets the kernels store through (sm90/swizzle.cuh,
sm90/fp8_tile.cuh) against the addresses CuTe's swizzled layouts give the same elements.

A host program built with nvcc and the CUTLASS/CuTe headers walks every 16-byte unit of the
tiles; nothing runs on a GPU. Skips without nvcc or the nvidia-cutlass wheel."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "etap_kernels"))
import _build  # noqa: E402

PROGRAM = r"""
#include <cute/tensor.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cstdio>
#include "sm90/fp8_tile.cuh"
#include "sm90/swizzle.cuh"
using namespace cute;
using namespace etap;
using namespace etap::sm90;

// Byte offset CuTe gives element (r, c) of `layout` over a 1024-byte-aligned shared base.
template <class E, class L>
long cute_offset(L layout, int r, int c) {
  E* base = reinterpret_cast<E*>(uintptr_t(1) << 20);
  auto t = make_tensor(make_smem_ptr(base), layout);
  return reinterpret_cast<char*>(raw_pointer_cast(&t(r, c))) - reinterpret_cast<char*>(base);
}

int bad = 0;
void expect(const char* what, int r, int u, long cute, long ours) {
  if (cute != ours && bad++ < 10) std::printf("%s row %d unit %d: CuTe %ld, ours %ld\n", what, r, u, cute, ours);
}

template <class E>
void sixteen_bit(const char* what) {
  using KV = decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<E>{}, Shape<_64, Int<kDimQK>>{}));
  using P = decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<E>{}, Shape<_64, _64>{}));
  for (int r = 0; r < 64; ++r) {
    for (int u = 0; u < kDimQK / 8; ++u) expect(what, r, u, cute_offset<E>(KV{}, r, 8 * u), sw128_unit_offset(r, u));
    // heads_on_m.cuh's P words: word q of unit j of row r
    for (int j = 0; j < 8; ++j)
      for (int q = 0; q < 4; ++q)
        expect("P word", r, j, cute_offset<E>(P{}, r, 8 * j + 2 * q), r * 128 + ((j ^ (r % 8)) << 4) + 4 * q);
  }
}

// The transposed consumers' P^T: [rows][64], a thread's value (v0, v1, j) at row
// n = 2 (lane % 4) + v0 + 8 j, column m = 16 warp + lane / 4 + 8 v1.
template <class E, int kRows>
void p_transposed() {
  using P = decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<E>{}, Shape<Int<kRows>, _64>{}));
  for (int warp = 0; warp < 4; ++warp)
    for (int lane = 0; lane < 32; ++lane)
      for (int i = 0; i < kRows * 64 / 128; ++i) {
        const int v0 = i % 2, v1 = (i / 2) % 2, j = i / 4;
        const int n = 2 * (lane % 4) + v0 + 8 * j, m = 16 * warp + lane / 4 + 8 * v1;
        expect("P^T", n, m, cute_offset<E>(P{}, n, m), pt_thread_base(warp, lane) + pt_value_offset(v0, v1, j));
      }
}

int main() {
  p_transposed<cutlass::bfloat16_t, 8>();
  p_transposed<cutlass::bfloat16_t, 16>();
  p_transposed<cutlass::half_t, 24>();
  p_transposed<cutlass::half_t, 32>();
  p_transposed<cutlass::half_t, 64>();  // the e4m3 dims split's [2N][64] buffer at N = 32
  sixteen_bit<cutlass::bfloat16_t>("bf16 tile");
  sixteen_bit<cutlass::half_t>("fp16 tile");
  using Fp8 = cutlass::float_e4m3_t;
  using Nope = decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<Fp8>{}, Shape<_64, Int<kDimV>>{}));
  using Rope = decltype(tile_to_shape(GMMA::Layout_K_SW64_Atom<Fp8>{}, Shape<_64, Int<kDimRope>>{}));
  for (int r = 0; r < 64; ++r) {
    for (int u = 0; u < kDimV / 16; ++u) expect("e4m3 latent", r, u, cute_offset<Fp8>(Nope{}, r, 16 * u), fp8_nope_offset(r, u));
    for (int u = 0; u < kDimRope / 16; ++u)
      expect("e4m3 rope", r, u, cute_offset<Fp8>(Rope{}, r, 16 * u), fp8_rope_offset(r, u) - kFp8RopeOffset);
  }
  std::printf("%d mismatches\n", bad);
  return bad != 0;
}
"""


def _nvcc():
    for cand in (shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if cand and Path(cand).exists():
            return cand
    return None


def test_spelled_out_offsets_match_cute(tmp_path):
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found")
    try:
        includes = _build.include_dirs()
    except Exception as exc:  # noqa: BLE001  (no nvidia-cutlass wheel)
        pytest.skip(f"CUTLASS headers not available: {exc}")
    src = tmp_path / "offsets.cu"
    src.write_text(PROGRAM)
    exe = tmp_path / "offsets"
    build = subprocess.run([nvcc, "-std=c++17", *(f"-I{d}" for d in includes), "-o", str(exe), str(src)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stdout + build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True)
    assert run.returncode == 0 and "0 mismatches" in run.stdout, run.stdout + run.stderr
