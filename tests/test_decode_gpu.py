"""GPU correctness of the ETAP decode kernel against the float64 reference (and FlashMLA).

Run on an sm_90a GPU: `python -m pytest -m gpu -q`. Every call gets fresh random inputs and a
NaN-poisoned output, so unwritten elements show. Set ETAP_TEST_REPORT=path.json to record each
case's error (and FlashMLA's on the same inputs, when its library is available).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path

import pytest
import torch

import etap_kernels
from etap_kernels import scheduler
from etap_kernels.reference import mla_decode_reference

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from baselines import load_flashmla  # noqa: E402

pytestmark = pytest.mark.gpu

H_Q = (1, 8, 16, 32, 64, 128)
S_Q = (1, 2, 4)
PAGE_SIZES = (1, 16, 32, 64, 128)
LAYOUTS = ("flashmla", "views_indices", "separate_block_table")
BATCHES = (1, 3, 64)
EDGE_LENGTHS = (0, 1, 63, 64, 65, 127, 128, 1000, 4097)
LONG = 65536
REPORT: list = []


def _lengths(b: int, case: int, gen: torch.Generator) -> list:
    pool = list(EDGE_LENGTHS)
    lens = [pool[int(torch.randint(len(pool), (1,), generator=gen))] for _ in range(b)]
    for j in range(min(b, len(pool))):  # every edge length appears when the batch is large enough
        lens[j] = pool[(j + case) % len(pool)]
    if b <= 3 and case % 4 == 0:
        lens[0] = LONG
    return lens


def _build(b, s_q, h_q, lens, page_size, dtype, layout, gen, device="cuda"):
    """Random q and a shuffled, non-contiguous paged cache holding the sequences."""
    pages_needed = [max(1, -(-n // page_size)) for n in lens]
    num_pages = sum(pages_needed) + 7
    perm = torch.randperm(num_pages, generator=gen).tolist()
    tables, k = [], 0
    for n in pages_needed:
        tables.append(perm[k:k + n])
        k += n
    width = max(pages_needed)
    block_table = torch.full((b, width + 2), -1, dtype=torch.int32)
    for i, t in enumerate(tables):
        block_table[i, :len(t)] = torch.tensor(t, dtype=torch.int32)
    block_table = block_table.to(device)
    kv_indptr = torch.tensor([0] + list(itertools.accumulate(pages_needed)), dtype=torch.int32, device=device)
    kv_indices = torch.tensor([p for t in tables for p in t], dtype=torch.int32, device=device)

    q = torch.randn(b, s_q, h_q, 576, generator=gen).to(device=device, dtype=dtype)
    if layout == "separate_block_table":
        ckv = torch.randn(num_pages, page_size, 512, generator=gen).to(device=device, dtype=dtype)
        kpe = torch.randn(num_pages, page_size, 64, generator=gen).to(device=device, dtype=dtype)
        k_cache = None
    else:
        k_cache = torch.randn(num_pages, page_size, 1, 576, generator=gen).to(device=device, dtype=dtype)
        ckv, kpe = k_cache[:, :, 0, :512], k_cache[:, :, 0, 512:]
    seqlens = torch.tensor(lens, dtype=torch.int32, device=device)
    return q, k_cache, ckv, kpe, seqlens, block_table, kv_indptr, kv_indices


def _rel_err(out, ref):
    return ((out.double() - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def _check_lse(lse, ref_lse, tol=2e-3):
    """tol: one bound, or one per lse element (a tensor of lse's shape)."""
    finite = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), finite), "lse finiteness differs from the reference"
    assert bool((lse[~finite] == float("-inf")).all()), "rows without keys must have lse = -inf"
    if finite.any():
        excess = ((lse.double() - ref_lse).abs() - torch.as_tensor(tol, device=ref_lse.device))[finite]
        assert excess.max().item() < 0, f"lse beyond its bound by {excess.max().item():.3e}"


CASES = list(itertools.product(H_Q, S_Q, PAGE_SIZES, LAYOUTS))


@pytest.mark.parametrize("case", range(len(CASES)), ids=lambda i: "h{}-sq{}-page{}-{}".format(*CASES[i]))
def test_decode_matches_reference(case, seed):
    h_q, s_q, page_size, layout = CASES[case]
    dtype = (torch.bfloat16, torch.float16)[case % 2]
    causal = (case // 2) % 2 == 0
    b = BATCHES[case % 3]
    gen = torch.Generator().manual_seed(seed)
    lens = _lengths(b, case, gen)
    q, k_cache, ckv, kpe, seqlens, block_table, kv_indptr, kv_indices = _build(
        b, s_q, h_q, lens, page_size, dtype, layout, gen)
    meta, splits = etap_kernels.get_mla_metadata(seqlens, s_q * h_q, 1)

    out = torch.full((b, s_q, h_q, 512), float("nan"), dtype=dtype, device="cuda")
    lse = torch.full((b, h_q, s_q), float("nan"), dtype=torch.float32, device="cuda")
    if layout == "flashmla":
        out, lse = etap_kernels.flash_mla_with_kvcache(q, k_cache, block_table, seqlens, 512, meta, splits,
                                                       causal=causal)
    elif layout == "views_indices":
        etap_kernels.mla_decode(q[..., :512], q[..., 512:], ckv, kpe, seqlens, meta, splits,
                                kv_indptr=kv_indptr, kv_indices=kv_indices, causal=causal, out=out, lse=lse)
    else:
        etap_kernels.mla_decode(q[..., :512].contiguous(), q[..., 512:].contiguous(), ckv, kpe, seqlens, meta,
                                splits, block_table=block_table, causal=causal, out=out, lse=lse)
    torch.cuda.synchronize()
    ref_out, ref_lse = mla_decode_reference(q[..., :512], q[..., 512:], ckv, kpe, seqlens,
                                            block_table=block_table, causal=causal)
    assert not torch.isnan(out).any(), "unwritten or NaN output elements"
    err = _rel_err(out, ref_out)
    _check_lse(lse, ref_lse)

    fm_err = None
    flashmla = load_flashmla()
    if flashmla is not None and layout == "flashmla" and page_size == 64 and dtype == torch.bfloat16:
        fm_out, _ = flashmla(q, k_cache, block_table, seqlens, causal=causal)
        fm_err = _rel_err(fm_out, ref_out)
    REPORT.append(dict(h_q=h_q, s_q=s_q, page_size=page_size, layout=layout, dtype=str(dtype)[6:], causal=causal,
                       batch=b, lens=lens if b <= 3 else f"{b} mixed", etap_rel_err=err, flashmla_rel_err=fm_err))
    bound = 4e-3 if dtype == torch.bfloat16 else 1e-3
    assert err < bound, f"relative error {err:.3e} >= {bound}"
    if fm_err is not None:
        assert err <= fm_err * 1.1 + 1e-5, f"ETAP error {err:.3e} above FlashMLA's {fm_err:.3e}"


@pytest.mark.parametrize(
    "b,s_q,h_q,page_size,lens,causal",
    [
        (1024, 1, 16, 1, "mixed", False),            # the largest batch
        (1, 1, 16, 64, [262144 + 5], False),         # 256K context (and a partial last tile)
        (2, 8, 128, 32, [3000, 7], True),            # MTP verify: 8 new tokens, 1024 query rows
        (3, 1, 128, 128, [130, 0, 129], False),
    ],
)
def test_extreme_shapes(b, s_q, h_q, page_size, lens, causal, seed):
    gen = torch.Generator().manual_seed(seed)
    if lens == "mixed":
        lens = torch.randint(0, 300, (b,), generator=gen).tolist()
    q, k_cache, ckv, kpe, seqlens, block_table, _, _ = _build(b, s_q, h_q, lens, page_size, torch.bfloat16,
                                                              "flashmla", gen)
    meta, splits = etap_kernels.get_mla_metadata(seqlens, s_q * h_q, 1)
    out, lse = etap_kernels.flash_mla_with_kvcache(q, k_cache, block_table, seqlens, 512, meta, splits,
                                                   causal=causal)
    ref_out, ref_lse = mla_decode_reference(q[..., :512], q[..., 512:], ckv, kpe, seqlens,
                                            block_table=block_table, causal=causal)
    assert not torch.isnan(out).any()
    assert _rel_err(out, ref_out) < 4e-3
    _check_lse(lse, ref_lse)


@pytest.mark.parametrize("h_q,s_q", [(16, 1), (128, 2)])
def test_cuda_graph_replay_with_new_lengths(h_q, s_q, seed):
    """Capture metadata + decode once; replay with rewritten lengths and page tables."""
    gen = torch.Generator().manual_seed(seed)
    b, page_size, max_pages = 8, 64, 40
    num_pages = b * max_pages + 5
    k_cache = torch.randn(num_pages, page_size, 1, 576, generator=gen).cuda().to(torch.bfloat16)
    q = torch.randn(b, s_q, h_q, 576, generator=gen).cuda().to(torch.bfloat16)
    seqlens = torch.zeros(b, dtype=torch.int32, device="cuda")
    block_table = torch.zeros(b, max_pages, dtype=torch.int32, device="cuda")
    out = torch.empty(b, s_q, h_q, 512, dtype=torch.bfloat16, device="cuda")
    lse = torch.empty(b, h_q, s_q, dtype=torch.float32, device="cuda")

    def step():
        meta, splits = etap_kernels.get_mla_metadata(seqlens, s_q * h_q, 1)
        etap_kernels.mla_decode(q[..., :512], q[..., 512:], k_cache[:, :, 0, :512], k_cache[:, :, 0, 512:],
                                seqlens, meta, splits, block_table=block_table, causal=True, out=out, lse=lse)

    def new_inputs(step_idx):
        lens = torch.randint(0, max_pages * page_size + 1, (b,), generator=gen)
        lens[step_idx % b] = 0
        seqlens.copy_(lens.to(torch.int32))
        block_table.copy_(torch.randperm(num_pages, generator=gen)[: b * max_pages].view(b, max_pages).to(torch.int32))
        q.copy_(torch.randn(q.shape, generator=gen).to(torch.bfloat16))

    new_inputs(0)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        step()  # warm-up (builds/loads the extension outside capture)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    for i in range(1, 6):
        new_inputs(i)
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        replay_out, replay_lse = out.clone(), lse.clone()
        step()
        torch.cuda.synchronize()
        assert torch.equal(replay_out, out), f"replay {i}: output differs from eager"
        assert torch.equal(replay_lse.nan_to_num(), lse.nan_to_num())
        ref_out, _ = mla_decode_reference(q[..., :512], q[..., 512:], k_cache[:, :, 0, :512],
                                          k_cache[:, :, 0, 512:], seqlens, block_table=block_table, causal=True)
        assert _rel_err(replay_out, ref_out) < 4e-3


def test_gpu_metadata_matches_python_scheduler(seed):
    gen = torch.Generator().manual_seed(seed)
    for b, hi in [(1, 300000), (16, 70000), (64, 5000), (300, 2000), (1024, 300)]:
        lens = torch.randint(0, hi, (b,), generator=gen)
        lens[0] = 0
        for rows, fp8 in ((16, False), (128, False), (1024, False), (16, True), (128, True)):
            meta, splits = etap_kernels.get_mla_metadata(lens.to(torch.int32).cuda(), rows, 1, is_fp8_kvcache=fp8)
            parts = etap_kernels.num_sm_parts(rows, torch.device("cuda"), fp8)
            ref_meta, ref_splits = scheduler.schedule(lens.tolist(), parts, scheduler.fixed_cost_tiles(fp8))
            assert meta.cpu().tolist() == [list(r) for r in ref_meta]
            assert splits.cpu().tolist() == list(ref_splits)


def test_value_checks_and_device_errors():
    b, page_size = 2, 16
    k_cache = torch.randn(8, page_size, 1, 576, device="cuda", dtype=torch.bfloat16)
    q = torch.randn(b, 1, 16, 576, device="cuda", dtype=torch.bfloat16)
    table = torch.arange(8, dtype=torch.int32, device="cuda").view(2, 4)
    lens = torch.tensor([10, 65], dtype=torch.int32, device="cuda")  # 65 > 4 pages * 16
    meta, splits = etap_kernels.get_mla_metadata(lens, 16, 1)
    with pytest.raises(ValueError, match="cache_seqlens"):
        etap_kernels.flash_mla_with_kvcache(q, k_cache, table, lens, 512, meta, splits)
    with pytest.raises(ValueError, match="block_table"):
        etap_kernels.flash_mla_with_kvcache(q, k_cache, table.cpu(), lens, 512, meta, splits)
    bad_table = torch.tensor([[0, 1, 1 << 30, -5], [7, 6, 5, 4]], dtype=torch.int32, device="cuda")
    ok_lens = torch.tensor([40, 64], dtype=torch.int32, device="cuda")
    with pytest.raises(ValueError, match="block_table holds page ids"):
        etap_kernels.flash_mla_with_kvcache(q, k_cache, bad_table, ok_lens, 512, meta, splits)
    # Out-of-range page ids and lengths past the table never touch memory outside the cache:
    out, lse = etap_kernels.mla_decode(q[..., :512], q[..., 512:], k_cache[:, :, 0, :512], k_cache[:, :, 0, 512:],
                                       lens, meta, splits, block_table=bad_table, validate_values=False)
    torch.cuda.synchronize()
    assert torch.isfinite(out).all()


@pytest.fixture(scope="session", autouse=True)
def _write_report():
    yield
    path = os.environ.get("ETAP_TEST_REPORT")
    if path and REPORT:
        worst = max(r["etap_rel_err"] for r in REPORT)
        fm = [r["flashmla_rel_err"] for r in REPORT if r["flashmla_rel_err"] is not None]
        summary = dict(cases=len(REPORT), worst_etap_rel_err=worst, worst_flashmla_rel_err=max(fm) if fm else None,
                       device=torch.cuda.get_device_name(), cases_detail=REPORT)
        Path(path).write_text(json.dumps(summary, indent=1))
