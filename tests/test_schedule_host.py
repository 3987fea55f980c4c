"""The CUDA scheduler's walk (csrc/sm90/schedule.cuh, used by the metadata kernel) against the
Python mirror (etap_kernels/scheduler.py), compiled as a host program with g++: nothing runs on
a GPU. The kernel's own steps (tile counts, one payload candidate per thread, each row's first
length) are repeated serially in the program. Skips without g++."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from etap_kernels import scheduler

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "etap_kernels" / "csrc"

PROGRAM = r"""
#include <cstdio>
#include <vector>
#include "sm90/schedule.cuh"
using namespace etap;

// stdin: cases of "num_parts fixed_cost batch len_0 .. len_{batch-1}";
// stdout per case: the payload, num_parts rows of meta, then num_splits.
int main() {
  int parts, cost, batch;
  while (std::scanf("%d %d %d", &parts, &cost, &batch) == 3) {
    std::vector<int> tiles(batch), lens(batch);
    for (int i = 0; i < batch; ++i) {
      if (std::scanf("%d", &lens[i]) != 1) return 1;
      tiles[i] = schedule_num_tiles(lens[i]);  // as metadata_kernel
    }
    const long long least = schedule_least_payload(tiles.data(), batch, parts, cost);
    int best = cost;
    for (int k = cost - 1; k >= 0; --k)
      if (schedule_fits(tiles.data(), batch, parts, least + k, cost)) best = k;
    std::vector<int> meta(parts * kMetaInts), splits(batch + 1);
    schedule_walk(tiles.data(), batch, parts, least + best, cost, meta.data(), splits.data());
    for (int p = 0; p < parts; ++p) schedule_first_len(lens.data(), batch, meta.data() + p * kMetaInts);
    std::printf("%lld\n", least + best);
    for (int p = 0; p < parts; ++p) {
      for (int j = 0; j < kMetaInts; ++j) std::printf("%d ", meta[p * kMetaInts + j]);
      std::printf("\n");
    }
    for (int x : splits) std::printf("%d ", x);
    std::printf("\n");
  }
  return 0;
}
"""


@pytest.fixture(scope="module")
def host_schedule(tmp_path_factory):
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("g++ not found")
    d = tmp_path_factory.mktemp("schedule_host")
    (d / "main.cpp").write_text(PROGRAM)
    exe = d / "schedule_host"
    proc = subprocess.run([cxx, "-std=c++17", "-O1", f"-I{CSRC}", str(d / "main.cpp"), "-o", str(exe)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr

    def run(cases):
        text = "".join(f"{parts} {cost} {len(lens)} {' '.join(map(str, lens))}\n" for lens, parts, cost in cases)
        out = subprocess.run([str(exe)], input=text, capture_output=True, text=True, check=True).stdout.split("\n")
        res, k = [], 0
        for lens, parts, _ in cases:
            pay = int(out[k])
            meta = [[int(x) for x in out[k + 1 + p].split()] for p in range(parts)]
            splits = [int(x) for x in out[k + 1 + parts].split()]
            res.append((pay, meta, splits))
            k += parts + 2
        return res

    return run


def _cases(seed, count):
    rng = random.Random(seed)
    cases = []
    for _ in range(count):
        b = rng.choice([1, 2, 3, 7, 16, 64, 128, rng.randint(1, 600)])
        kind = rng.randrange(4)
        if kind == 0:
            lens = [rng.randint(-5, 300000) for _ in range(b)]
        elif kind == 1:
            lens = [rng.randint(0, 300) for _ in range(b)]
        elif kind == 2:
            lens = [rng.choice([1024, 4096, 8192, 65536, 131072])] * b
        else:
            lens = [0 if rng.random() < 0.8 else rng.randint(1, 200000) for _ in range(b)]
        cases.append((lens, rng.choice([1, 2, 33, 66, 132, rng.randint(1, 132)]),
                      rng.choice([scheduler.FIXED_COST, scheduler.FIXED_COST_FP8, 0, rng.randint(1, 12)])))
    return cases


@pytest.mark.parametrize("seed", range(4))
def test_cuda_walk_matches_python_mirror(host_schedule, seed):
    cases = _cases(seed, 100)
    for (lens, parts, cost), (pay, meta, splits) in zip(cases, host_schedule(cases)):
        assert pay == scheduler.payload(lens, parts, cost), (lens, parts, cost)
        ref_meta, ref_splits = scheduler.schedule(lens, parts, cost)
        assert meta == [list(r) for r in ref_meta], (lens, parts, cost)
        assert splits == list(ref_splits), (lens, parts, cost)


def test_cuda_walk_grid_shapes(host_schedule):
    # b16/8K at the e4m3 cost: payload 21 (16 tiles per part), as the mirror says
    cases = [([8192] * 16, 132, scheduler.FIXED_COST_FP8), ([4096] * 64, 132, scheduler.FIXED_COST),
             ([65536], 132, scheduler.FIXED_COST)]
    res = host_schedule(cases)
    assert res[0][0] == 21
    for (lens, parts, cost), (pay, meta, splits) in zip(cases, res):
        ref_meta, ref_splits = scheduler.schedule(lens, parts, cost)
        assert meta == [list(r) for r in ref_meta] and splits == list(ref_splits)
