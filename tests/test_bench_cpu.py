"""CPU checks of scripts/bench_decode.py helpers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import bench_decode  # noqa: E402


def test_rounds_rotate_the_order_of_implementations():
    names = ["etap", "etap+x", "flashmla"]
    orders = [bench_decode.rotated(names, r) for r in range(4)]
    assert orders[0] == names
    assert orders[1] == ["etap+x", "flashmla", "etap"]
    assert orders[2] == ["flashmla", "etap", "etap+x"]
    assert orders[3] == names
    # over len(names) rounds every implementation is timed first once
    assert {o[0] for o in orders[:3]} == set(names)
    assert bench_decode.rotated([], 5) == []


def test_warm_gpu_runs_for_the_time_asked(monkeypatch):
    import time

    calls = []
    monkeypatch.setattr(bench_decode.torch.cuda, "synchronize", lambda: None)
    t0 = time.perf_counter()
    bench_decode.warm_gpu(lambda: calls.append(1), 0.02)
    assert time.perf_counter() - t0 >= 0.02 and len(calls) >= 1
    calls.clear()
    bench_decode.warm_gpu(lambda: calls.append(1), 0.0)
    assert calls == []
    saved = bench_decode.WARMUP_SECONDS
    try:
        bench_decode.set_warmup(-1)
        assert bench_decode.WARMUP_SECONDS == 0.0
    finally:
        bench_decode.set_warmup(saved)
