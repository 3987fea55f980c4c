"""CPU checks of scripts/reliability.py's case generator, shrinker and sanitizer driver set."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import reliability as R  # noqa: E402
from etap_kernels.interface import row_grouping  # noqa: E402


def test_random_cases_stay_in_the_supported_space():
    rng = random.Random(0)
    cases = [R.random_case(rng) for _ in range(2000)]
    for c in cases:
        assert 1 <= c["s_q"] * c["h_q"] <= 512
        assert c["page_size"] in R.PAGE_SIZES and all(n >= 0 for n in c["lens"])
        assert (c["kv_scale"] is not None) == (c["dtype"] == "fp8")
        assert not c["causal"] or c["s_q"] > 1
    assert {c["dtype"] for c in cases} == {"bf16", "fp16", "fp8"}
    assert {c["layout"] for c in cases} == {"block_table", "indices", "separate"}
    assert max(max(c["lens"]) for c in cases) >= 60_000
    assert any(0 in c["lens"] for c in cases) and any(1 in c["lens"] for c in cases)


def test_shrink_keeps_a_smaller_failing_case(monkeypatch):
    monkeypatch.setattr(R, "check_case", lambda case, determinism=False: "boom" if max(case["lens"]) >= 1000 else None)
    case = dict(dtype="bf16", h_q=16, s_q=1, lens=[5, 7000, 3, 1200], page_size=16, layout="block_table",
                strided=False, causal=False, seed=1, kv_scale=None)
    small = R.shrink(case, "boom", budget=200)
    assert len(small["lens"]) == 1 and 1000 <= small["lens"][0] < 2000 and small["reason"] == "boom"


def test_sanitizer_driver_reaches_every_instance():
    picked = set()
    for c in R.driver_cases():
        fp8 = c["dtype"] == "fp8"
        groups, per_group, per_wg = row_grouping(c["s_q"] * c["h_q"], fp8, c["page_size"])
        picked.add((c["dtype"], per_wg, per_wg >= per_group))
    for dt in ("bf16", "fp16"):
        assert {n for d, n, _ in picked if d == dt} == {8, 16, 24, 32}
        assert (dt, 8, True) in picked and (dt, 8, False) in picked  # KV split and row split
    # e4m3: KV split up to 16 rows (N 8, 16), above that rows split with the dims split (N 16..32)
    assert {(n, kv) for d, n, kv in picked if d == "fp8"} == {(8, True), (16, True), (16, False), (24, False),
                                                              (32, False)}


def test_fp8_lse_bound_covers_the_query_quantisation(monkeypatch):
    """The bound is the q hi/lo e4m3 rounding at 6 sigma: on CPU, quantise q the kernel's way and
    check that the lse it gives stays inside the bound (and that the bound is not vacuous)."""
    import torch

    from etap_kernels.reference import mla_decode_reference

    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)  # build() on the CPU
    case = dict(dtype="fp8", h_q=16, s_q=1, lens=[300, 1, 77], page_size=16, layout="block_table",
                strided=True, causal=False, seed=5, kv_scale=0.05)
    x = R.build(case)
    bound = R.fp8_lse_bound(x, case)
    assert bound.shape == (3, 16, 1) and bool((bound > 1e-3).all()) and bool((bound < 0.5).all())

    def quantised(q):  # q * sigma = hi + lo / 16, sigma = 240 / max|q| per row, both parts e4m3
        q = q.float()
        sigma = 240.0 / q.abs().amax(-1, keepdim=True)
        hi = (q * sigma).to(torch.float8_e4m3fn).float()
        lo = ((q * sigma - hi) * 16).to(torch.float8_e4m3fn).float()
        return ((hi + lo / 16) / sigma).double()

    q = x["q"]
    _, lse = mla_decode_reference(q[..., :512], q[..., 512:], x["ckv"], x["kpe"], x["seqlens"],
                                  block_table=x["block_table"], kv_scale=case["kv_scale"])
    qq = quantised(q)
    _, lse_q = mla_decode_reference(qq[..., :512], qq[..., 512:], x["ckv"], x["kpe"], x["seqlens"],
                                    block_table=x["block_table"], kv_scale=case["kv_scale"])
    err = (lse_q - lse).abs()
    assert bool((err < bound).all()) and float((err / bound).max()) < 0.5
