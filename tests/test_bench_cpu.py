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
