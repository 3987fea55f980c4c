#!/usr/bin/env python3
"""Reliability suite for the ETAP decode kernels (run on an sm_90a GPU).

    python scripts/reliability.py --out results/            # fuzz, determinism, graphs, hostile inputs
    python scripts/reliability.py --sanitize                # + compute-sanitizer (memcheck, racecheck,
                                                            #   synccheck, initcheck) over --driver
    python scripts/reliability.py --driver                  # the small representative set the
                                                            #   sanitizer runs (every instance)

Every GPU result is compared with the float64 reference on fresh random inputs; outputs sit
inside guard regions filled with a sentinel (NaN-poisoned inside), so an unwritten element or a
write outside `out`/`lse` shows. A failing fuzz case is shrunk (fewer sequences, shorter lengths)
and written to the results as a regression case. The summary table goes to stdout and JSON.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import random
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import etap_kernels  # noqa: E402
from etap_kernels.reference import mla_decode_reference  # noqa: E402
from reliability_summary import print_table, reliability_rows, sanitizer_rows  # noqa: E402  (scripts/)

FP8 = torch.float8_e4m3fn
GUARD = 64  # guard elements on each side of out / lse
SENTINEL = 1234.5  # exact in bf16, fp16 and fp32
PAGE_SIZES = (1, 2, 16, 32, 64, 128, 256)
H_Q = (1, 2, 4, 8, 16, 24, 32, 48, 64, 128)
SANITIZER_TIMEOUT = int(os.environ.get("ETAP_SANITIZER_TIMEOUT", "240"))
TOL = {torch.bfloat16: 4e-3, torch.float16: 1e-3, FP8: 5e-3}


# ----------------------------------------------------------------------------- cases

def random_case(rng: random.Random) -> dict:
    dtype = rng.choices(["bf16", "fp16", "fp8"], weights=[45, 25, 30])[0]
    h_q = rng.choice(H_Q)
    s_q = rng.choice([1, 1, 1, 2, 3, 4])
    while s_q * h_q > 512:
        s_q -= 1
    b = rng.choice([1, 1, 2, 3, 5, 8, 8, 17, 33])
    kind = rng.random()
    lens = []
    for _ in range(b):
        r = rng.random()
        lens.append(0 if r < 0.08 else 1 if r < 0.15 else rng.randint(2, 300) if r < 0.6 else rng.randint(300, 6000))
    if kind < 0.12:  # one very long request among short ones
        lens[rng.randrange(b)] = rng.randint(60_000, 200_000)
    return dict(
        dtype=dtype, h_q=h_q, s_q=s_q, lens=lens, page_size=rng.choice(PAGE_SIZES),
        layout=rng.choice(["block_table", "indices", "separate"]), strided=rng.random() < 0.4,
        causal=s_q > 1 and rng.random() < 0.7, seed=rng.randrange(2**31),
        kv_scale=round(rng.uniform(0.01, 0.1), 4) if dtype == "fp8" else None,
    )


def _dtype(name):
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp8": FP8}[name]


def build(case: dict):
    """Inputs of a case: random q, a shuffled paged cache with spare pages, optional strides."""
    gen = torch.Generator().manual_seed(case["seed"])
    b, s_q, h_q, ps = len(case["lens"]), case["s_q"], case["h_q"], case["page_size"]
    kv_dtype = _dtype(case["dtype"])
    q_dtype = torch.bfloat16 if kv_dtype == FP8 else kv_dtype
    need = [max(1, -(-n // ps)) for n in case["lens"]]
    num_pages = sum(need) + 5
    perm = torch.randperm(num_pages, generator=gen).tolist()
    tables, k = [], 0
    for n in need:
        tables.append(perm[k:k + n])
        k += n
    width = max(need) + 1
    block_table = torch.full((b, width), -1, dtype=torch.int32)
    for i, t in enumerate(tables):
        block_table[i, :len(t)] = torch.tensor(t, dtype=torch.int32)
    indptr = torch.tensor([0] + list(itertools.accumulate(need)), dtype=torch.int32)
    indices = torch.tensor([p for t in tables for p in t], dtype=torch.int32)
    # A strided cache: rows of 640 elements of which 576 are used.
    row = 640 if case["strided"] else 576
    raw = torch.randn(num_pages, ps, row, generator=gen)
    if kv_dtype == FP8:
        raw = (raw * 40).clamp(-448, 448)
    buf = raw.to(kv_dtype).cuda()
    if case["layout"] == "separate":
        ckv, kpe = buf[..., :512].contiguous(), buf[..., 512:576].contiguous()
    else:
        ckv, kpe = buf[..., :512], buf[..., 512:576]
    qrow = 640 if case["strided"] else 576
    q = torch.randn(b, s_q, h_q, qrow, generator=gen).to(q_dtype).cuda()[..., :576]
    return dict(q=q, ckv=ckv, kpe=kpe, block_table=block_table.cuda(), indptr=indptr.cuda(),
                indices=indices.cuda(), seqlens=torch.tensor(case["lens"], dtype=torch.int32).cuda())


def guarded(shape, dtype):
    """A NaN-poisoned tensor of `shape` inside a buffer whose guard elements hold SENTINEL."""
    n = 1
    for d in shape:
        n *= d
    buf = torch.full((n + 2 * GUARD,), SENTINEL, dtype=dtype, device="cuda")
    buf[GUARD:GUARD + n] = float("nan")
    return buf, buf[GUARD:GUARD + n].view(shape)


def guards_intact(buf) -> bool:
    return bool((buf[:GUARD] == SENTINEL).all()) and bool((buf[-GUARD:] == SENTINEL).all())


def run_etap(case, x, out=None, lse=None, validate=True):
    b, s_q, h_q = len(case["lens"]), case["s_q"], case["h_q"]
    fp8 = case["dtype"] == "fp8"
    meta, splits = etap_kernels.get_mla_metadata(x["seqlens"], s_q * h_q, 1, is_fp8_kvcache=fp8)
    kw = dict(causal=case["causal"], out=out, lse=lse, validate_values=validate,
              kv_scale=case["kv_scale"] if fp8 else None)
    if case["layout"] == "indices":
        kw.update(kv_indptr=x["indptr"], kv_indices=x["indices"])
    else:
        kw.update(block_table=x["block_table"])
    return etap_kernels.mla_decode(x["q"][..., :512], x["q"][..., 512:], x["ckv"], x["kpe"], x["seqlens"],
                                   meta, splits, **kw)


def fp8_lse_bound(x: dict, case: dict) -> torch.Tensor:
    """Bound on |lse - lse_ref| per (batch, head, token) for an e4m3 cache.

    The kernel quantises each query row as q * sigma = hi + lo / 16 (sigma = 240 / max|q|, both
    parts e4m3), so each element carries an error of at most 0.25 / sigma, roughly uniform: standard
    deviation 0.25 / sqrt(3) / sigma. A score's error is then about that times ||k||_2 * scale (the
    errors of 576 products add like a random walk), and the lse, a smooth maximum of the scores,
    moves by at most the largest score error. Bound: 6 standard deviations over the largest key
    norm of the cache, plus 1e-3 for the fp32 softmax.
    """
    q = x["q"].double()
    q_err = q.abs().amax(-1) / 240.0 * 0.25 / 3 ** 0.5  # [b, s_q, h_q]
    keys = torch.cat([x["ckv"].double().reshape(-1, 512), x["kpe"].double().reshape(-1, 64)], -1)
    k_norm = keys.norm(dim=-1).max() * case["kv_scale"]
    return 1e-3 + 6 * q_err.permute(0, 2, 1) * k_norm * 576 ** -0.5  # as lse: [b, h_q, s_q]


def check_case(case: dict, determinism: bool = False) -> str | None:
    """None when the case passes, else a reason."""
    x = build(case)
    b, s_q, h_q = len(case["lens"]), case["s_q"], case["h_q"]
    out_dtype = torch.bfloat16 if case["dtype"] == "fp8" else _dtype(case["dtype"])
    obuf, out = guarded((b, s_q, h_q, 512), out_dtype)
    lbuf, lse = guarded((b, h_q, s_q), torch.float32)
    run_etap(case, x, out, lse)
    torch.cuda.synchronize()
    if not guards_intact(obuf) or not guards_intact(lbuf):
        return "write outside out/lse"
    ref, ref_lse = mla_decode_reference(
        x["q"][..., :512], x["q"][..., 512:], x["ckv"], x["kpe"], x["seqlens"], block_table=x["block_table"],
        causal=case["causal"], kv_scale=case["kv_scale"] or 1.0)
    if torch.isnan(out).any():
        return "unwritten (NaN) output elements"
    err = ((out.double() - ref).norm() / ref.norm().clamp_min(1e-300)).item()
    if err >= TOL[_dtype(case["dtype"])]:
        return f"relative error {err:.3e}"
    finite = torch.isfinite(ref_lse)
    if not torch.equal(torch.isfinite(lse), finite):
        return "lse finiteness differs"
    if finite.any():
        diff = (lse.double()[finite] - ref_lse[finite]).abs()
        bound = fp8_lse_bound(x, case)[finite] if case["dtype"] == "fp8" else torch.full_like(diff, 5e-3)
        if bool((diff >= bound).any()):
            worst = int((diff / bound).argmax())
            return f"lse error {diff[worst].item():.3e} > bound {bound[worst].item():.3e}"
    if determinism:
        o2, l2 = run_etap(case, x)
        if not (torch.equal(o2, out) and torch.equal(l2, lse)):
            return "not bitwise deterministic"
    return None


def shrink(case: dict, reason: str, budget: int = 40) -> dict:
    """Smaller failing variants: drop sequences, then halve lengths, while it still fails."""
    best, tries = dict(case), 0
    changed = True
    while changed and tries < budget:
        changed = False
        lens = best["lens"]
        candidates = [lens[:i] + lens[i + 1:] for i in range(len(lens))] if len(lens) > 1 else []
        candidates += [[max(0, n // 2) if j == i else n for j, n in enumerate(lens)] for i in range(len(lens)) if lens[i] > 1]
        for c in candidates:
            tries += 1
            trial = dict(best, lens=c)
            try:
                r = check_case(trial)
            except Exception as e:  # noqa: BLE001
                r = f"exception {e!r}"
            if r is not None:
                best, changed = trial, True
                break
            if tries >= budget:
                break
    best["reason"] = reason
    return best


def fuzz(n: int, seed: int) -> dict:
    rng = random.Random(seed)
    failures, tried, t0 = [], [], time.time()
    for i in range(n):
        case = random_case(rng)
        try:
            reason = check_case(case, determinism=i % 10 == 0)
        except Exception as e:  # noqa: BLE001
            reason = f"exception {e!r}"
            if "illegal" in str(e).lower() or "CUDA error" in str(e):
                failures.append(dict(case, reason=reason))
                break  # the context is gone
        tried.append(case)
        if reason is not None:
            print(f"  FAIL case {i}: {reason}: {case}", flush=True)
            failures.append(shrink(case, reason))
    summary = dict(cases=len(tried), failures=len(failures), seconds=round(time.time() - t0, 1), seed=seed,
                   dtypes=sorted({c["dtype"] for c in tried}), page_sizes=sorted({c["page_size"] for c in tried}),
                   h_q=sorted({c["h_q"] for c in tried}), s_q=sorted({c["s_q"] for c in tried}),
                   max_len=max(max(c["lens"]) for c in tried), zero_len_seqs=sum(c["lens"].count(0) for c in tried),
                   layouts=sorted({c["layout"] for c in tried}), strided=sum(c["strided"] for c in tried),
                   determinism_checked=sum(1 for i in range(len(tried)) if i % 10 == 0),
                   failing_cases=failures)
    return summary


# ----------------------------------------------------------------------------- CUDA graphs

def graph_replay(steps: int, dtype_name: str, seed: int) -> dict:
    """Capture metadata + decode once; replay with lengths growing/shrinking and the page table
    rewritten every step; compare with an eager call on the same inputs, bitwise."""
    rng = random.Random(seed)
    b, h_q, ps, max_len = 8, 16, 64, 8192
    kv_dtype = _dtype(dtype_name)
    fp8 = kv_dtype == FP8
    q_dtype = torch.bfloat16 if fp8 else kv_dtype
    max_pages = max_len // ps
    num_pages = b * max_pages + 8
    cache = torch.randn(num_pages, ps, 576, device="cuda")
    cache = ((cache * 40).clamp(-448, 448) if fp8 else cache).to(kv_dtype)
    ckv, kpe = cache[..., :512], cache[..., 512:]
    q = torch.randn(b, 1, h_q, 576, device="cuda").to(q_dtype)
    seqlens = torch.ones(b, dtype=torch.int32, device="cuda")
    table = torch.zeros(b, max_pages, dtype=torch.int32, device="cuda")
    out = torch.empty(b, 1, h_q, 512, dtype=q_dtype, device="cuda")
    lse = torch.empty(b, h_q, 1, dtype=torch.float32, device="cuda")
    scale = 0.05 if fp8 else None

    def step():
        meta, splits = etap_kernels.get_mla_metadata(seqlens, h_q, 1, is_fp8_kvcache=fp8)
        etap_kernels.mla_decode(q[..., :512], q[..., 512:], ckv, kpe, seqlens, meta, splits, block_table=table,
                                out=out, lse=lse, validate_values=False, kv_scale=scale)

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        step()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        step()
    lens = [rng.randint(1, max_len) for _ in range(b)]
    mismatches = 0
    for i in range(steps):
        lens = [min(max_len, max(0, n + rng.randint(-300, 400))) if rng.random() < 0.9 else rng.randint(0, max_len)
                for n in lens]
        seqlens.copy_(torch.tensor(lens, dtype=torch.int32))
        table.copy_(torch.randperm(num_pages)[:b * max_pages].view(b, max_pages).to(torch.int32))
        q.copy_(torch.randn_like(q, dtype=torch.float32).to(q_dtype))
        g.replay()
        o_graph, l_graph = out.clone(), lse.clone()
        step()
        if not (torch.equal(o_graph, out) and torch.equal(l_graph, lse)):
            mismatches += 1
    torch.cuda.synchronize()
    return dict(steps=steps, dtype=dtype_name, mismatches=mismatches)


# ----------------------------------------------------------------------------- hostile inputs

def hostile_inputs() -> list:
    """Each entry: (what, outcome). Exceptions must be Python exceptions naming the argument."""
    results = []
    base = dict(dtype="bf16", h_q=16, s_q=1, lens=[100, 7, 0], page_size=16, layout="block_table",
                strided=False, causal=False, seed=7, kv_scale=None)
    x = build(base)
    meta, splits = etap_kernels.get_mla_metadata(x["seqlens"], 16, 1)
    qn, qr = x["q"][..., :512], x["q"][..., 512:]

    def expect_error(what, fn, needle):
        try:
            fn()
            torch.cuda.synchronize()
            results.append((what, "FAIL: no exception"))
        except (TypeError, ValueError, RuntimeError) as e:
            ok = needle in str(e)
            results.append((what, f"{'ok' if ok else 'FAIL (message)'}: {type(e).__name__}: {str(e)[:90]}"))

    call = etap_kernels.mla_decode
    expect_error("q_nope float32", lambda: call(qn.float(), qr, x["ckv"], x["kpe"], x["seqlens"], meta, splits,
                                                block_table=x["block_table"]), "q_nope")
    expect_error("q_nope on CPU", lambda: call(qn.cpu(), qr, x["ckv"], x["kpe"], x["seqlens"], meta, splits,
                                               block_table=x["block_table"]), "q_nope")
    expect_error("q_rope rank 3", lambda: call(qn, qr[0], x["ckv"], x["kpe"], x["seqlens"], meta, splits,
                                               block_table=x["block_table"]), "q_rope")
    expect_error("ckv head dim 511", lambda: call(qn, qr, x["ckv"][..., :511], x["kpe"], x["seqlens"], meta,
                                                  splits, block_table=x["block_table"]), "ckv_cache")
    expect_error("kpe page size mismatch", lambda: call(qn, qr, x["ckv"], x["kpe"][:, :8], x["seqlens"], meta,
                                                        splits, block_table=x["block_table"]), "kpe_cache")
    expect_error("seqlens int64", lambda: call(qn, qr, x["ckv"], x["kpe"], x["seqlens"].long(), meta, splits,
                                               block_table=x["block_table"]), "cache_seqlens")
    expect_error("both block_table and indices", lambda: call(
        qn, qr, x["ckv"], x["kpe"], x["seqlens"], meta, splits, block_table=x["block_table"],
        kv_indptr=x["indptr"], kv_indices=x["indices"]), "block_table")
    expect_error("length beyond the page table", lambda: call(
        qn, qr, x["ckv"], x["kpe"], torch.tensor([10_000, 7, 0], dtype=torch.int32, device="cuda"), meta, splits,
        block_table=x["block_table"]), "cache_seqlens")
    bad = x["block_table"].clone()
    bad[0, 0] = -5
    expect_error("negative page id", lambda: call(qn, qr, x["ckv"], x["kpe"], x["seqlens"], meta, splits,
                                                  block_table=bad), "block_table")
    bad2 = x["block_table"].clone()
    bad2[0, 1] = 10**6
    expect_error("page id out of range", lambda: call(qn, qr, x["ckv"], x["kpe"], x["seqlens"], meta, splits,
                                                      block_table=bad2), "block_table")
    bad_idx = x["indices"].clone()
    bad_idx[3] = 10**6
    expect_error("kv_indices out of range", lambda: call(qn, qr, x["ckv"], x["kpe"], x["seqlens"], meta, splits,
                                                         kv_indptr=x["indptr"], kv_indices=bad_idx), "kv_indices")
    expect_error("out wrong shape", lambda: call(qn, qr, x["ckv"], x["kpe"], x["seqlens"], meta, splits,
                                                 block_table=x["block_table"],
                                                 out=torch.empty(3, 1, 16, 256, dtype=torch.bfloat16,
                                                                 device="cuda")), "out")
    expect_error("fp8 cache with fp16 q", lambda: call(qn.half(), qr.half(), x["ckv"].to(FP8), x["kpe"].to(FP8),
                                                       x["seqlens"], meta, splits, block_table=x["block_table"]),
                 "bf16")
    expect_error("uint8 cache", lambda: call(qn, qr, x["ckv"].to(FP8).view(torch.uint8),
                                             x["kpe"].to(FP8).view(torch.uint8), x["seqlens"], meta, splits,
                                             block_table=x["block_table"]), "float8")
    expect_error("flash_mla head_dim_v 128", lambda: etap_kernels.flash_mla_with_kvcache(
        x["q"].contiguous(), torch.randn(4, 16, 1, 576, dtype=torch.bfloat16, device="cuda"), x["block_table"],
        x["seqlens"], 128, meta, splits), "head_dim_v")

    # With value checks off (CUDA-graph mode) bad ids are zero-filled keys: no fault, guards intact.
    for what, kw in (("negative page id, unchecked", dict(block_table=bad)),
                     ("page id out of range, unchecked", dict(block_table=bad2)),
                     ("kv_indices out of range, unchecked", dict(kv_indptr=x["indptr"], kv_indices=bad_idx)),
                     ("length beyond the table, unchecked", dict(block_table=x["block_table"]))):
        lens = x["seqlens"] if "length" not in what else torch.tensor([10_000, 7, 0], dtype=torch.int32,
                                                                      device="cuda")
        m2, s2 = etap_kernels.get_mla_metadata(lens, 16, 1)
        obuf, out = guarded((3, 1, 16, 512), torch.bfloat16)
        lbuf, lse = guarded((3, 16, 1), torch.float32)
        call(qn, qr, x["ckv"], x["kpe"], lens, m2, s2, out=out, lse=lse, validate_values=False, **kw)
        torch.cuda.synchronize()
        ok = guards_intact(obuf) and guards_intact(lbuf) and not torch.isnan(out[:2]).any()
        results.append((what, "ok: no fault, guards intact, rows written" if ok else "FAIL"))

    # The FlashInfer shim (BatchMLAPagedAttentionWrapper semantics): plan/run argument errors.
    try:
        sys.path.insert(0, str(ROOT / "scripts"))
        from baselines import ensure_integration_importable
        ensure_integration_importable()
        from etap_integration.flashinfer_etap import EtapMLABackend
        fi = EtapMLABackend(torch.empty(1 << 20, dtype=torch.uint8, device="cuda"))
        qo = torch.arange(4, dtype=torch.int32, device="cuda")
        plan = [qo, x["indptr"], x["indices"], x["seqlens"], 16, 512, 64, 16, False, 0.07, torch.bfloat16,
                torch.bfloat16]

        def plan_with(i, v):
            args = list(plan)
            args[i] = v
            return lambda: fi.plan(*args)

        expect_error("flashinfer plan head_dim_ckv 256", plan_with(5, 256), "head_dim_ckv")
        expect_error("flashinfer plan page_size 0", plan_with(7, 0), "page_size")
        expect_error("flashinfer plan kv_data_type fp16 with bf16 q", plan_with(11, torch.float16), "kv_data_type")
        expect_error("flashinfer plan sm_scale -1", plan_with(9, -1.0), "sm_scale")
        fi.plan(*plan)
        ckv16, kpe16 = x["ckv"], x["kpe"]
        qf, rf = qn[:, 0].contiguous(), qr[:, 0].contiguous()
        expect_error("flashinfer run q_nope with 8 heads", lambda: fi.run(qf[:, :8], rf, ckv16, kpe16), "q_nope")
        out_fi = fi.run(qf, rf, ckv16, kpe16)
        ok = torch.equal(out_fi, call(qn, qr, x["ckv"], x["kpe"], x["seqlens"], meta, splits,
                                      block_table=x["block_table"], softmax_scale=0.07)[0][:, 0])
        results.append(("flashinfer run after the refusals", "ok: same output as mla_decode" if ok else "FAIL"))
    except Exception:  # noqa: BLE001
        results.append(("flashinfer shim", "FAIL: " + traceback.format_exc()[-300:]))

    # NaN in one query row stays in that row; NaN in one cached key poisons only its sequence.
    qn2 = qn.clone()
    qn2[1, 0, 3, 5] = float("nan")
    out_ref, _ = call(qn, qr, x["ckv"], x["kpe"], x["seqlens"], meta, splits, block_table=x["block_table"])
    out_nan, _ = call(qn2, qr, x["ckv"], x["kpe"], x["seqlens"], meta, splits, block_table=x["block_table"])
    mask = torch.zeros_like(out_nan, dtype=torch.bool)
    mask[1, 0, 3] = True
    ok = bool(torch.isnan(out_nan[1, 0, 3]).all()) and torch.equal(out_nan[~mask], out_ref[~mask])
    results.append(("NaN in q[1, 0, head 3]", "ok: that row NaN, every other row unchanged" if ok else "FAIL"))
    ckv2 = x["ckv"].clone()
    page0 = int(x["block_table"][0, 0])
    ckv2[page0, 2, 9] = float("inf")
    out_inf, _ = call(qn, qr, ckv2, x["kpe"], x["seqlens"], meta, splits, block_table=x["block_table"])
    ok = bool(torch.isnan(out_inf[0]).any()) and torch.equal(out_inf[1:], out_ref[1:])
    results.append(("Inf in a key of sequence 0", "ok: sequence 0 non-finite, others unchanged" if ok else "FAIL"))
    torch.cuda.synchronize()
    return results


# ----------------------------------------------------------------------------- sanitizer

def driver_cases() -> list:
    """Every instance the dispatcher picks by default (bf16/fp16 N 8..32 KV split and row split;
    e4m3 N 8/16 KV split, N 16..32 dims split), split and whole sequences, partial tiles and
    pages, page sizes 1/16/64."""
    cases = []
    for dtype, h_q, s_q in itertools.product(("bf16", "fp16", "fp8"), (1, 8, 16, 24, 48, 64), (1,)):
        for lens, ps in (([1, 65, 200], 16), ([1000], 64), ([127, 0, 64], 1)):
            cases.append(dict(dtype=dtype, h_q=h_q, s_q=s_q, lens=lens, page_size=ps, layout="block_table",
                              strided=ps == 16, causal=False, seed=len(cases),
                              kv_scale=0.05 if dtype == "fp8" else None))
    cases.append(dict(dtype="bf16", h_q=16, s_q=2, lens=[130, 9], page_size=64, layout="indices", strided=False,
                      causal=True, seed=99, kv_scale=None))
    return cases


def run_driver() -> int:
    bad = 0
    for case in driver_cases():
        r = check_case(case)
        if r is not None:
            print("FAIL", r, case)
            bad += 1
    print(f"driver: {len(driver_cases())} cases, {bad} failures")
    return bad


def sanitize(out_dir: Path, tools) -> list:
    """One compute-sanitizer process per tool over the driver set, all tools at once (each one is
    a separate process on the same GPU; together they take as long as the slowest)."""
    tool_bin = "/usr/local/cuda/bin/compute-sanitizer"
    procs = {}
    for tool in tools:
        cmd = [tool_bin, "--tool", tool, "--error-exitcode", "3", "--print-limit", "20",
               sys.executable, str(Path(__file__).resolve()), "--driver"]
        if tool == "memcheck":
            cmd[3:3] = ["--leak-check", "no"]
        log = open(out_dir / f"sanitizer_{tool}.txt", "w+")
        procs[tool] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log, time.time())
    rows = []
    for tool, (proc, log, t0) in procs.items():
        try:
            rc = proc.wait(timeout=max(1.0, SANITIZER_TIMEOUT - (time.time() - t0)))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = -1
        log.seek(0)
        text = log.read()
        log.close()
        if rc == -1:
            text += f"\ntimed out after {SANITIZER_TIMEOUT} s"
        (out_dir / f"sanitizer_{tool}.txt").write_text(text[-20000:])
        summary = [ln for ln in text.splitlines() if "ERROR SUMMARY" in ln or "RACECHECK SUMMARY" in ln]
        last = text.strip().splitlines()[-1][:200] if text.strip() else "no output"
        rows.append(dict(tool=tool, exit=rc, seconds=round(time.time() - t0, 1),
                         summary=summary[-1] if summary else last))
        print(f"  {tool}: exit {rc}, {rows[-1]['summary']}", flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--graph-steps", type=int, default=1000)
    ap.add_argument("--sanitize", action="store_true")
    ap.add_argument("--sanitize-only", action="store_true", help="only the compute-sanitizer runs (another process "
                    "can run the rest at the same time, e.g. on another GPU)")
    ap.add_argument("--tools", default="memcheck,racecheck,synccheck,initcheck", help="compute-sanitizer tools")
    ap.add_argument("--driver", action="store_true", help="only the sanitizer's representative set")
    ap.add_argument("--out", default=str(ROOT / "results"))
    args = ap.parse_args()
    if args.driver:
        sys.exit(1 if run_driver() else 0)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name()
    report = dict(device=device, date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  command=" ".join([Path(sys.executable).name] + sys.argv), torch=torch.__version__,
                  python=platform.python_version(),
                  env={k: v for k, v in os.environ.items() if k.startswith("ETAP_") and k != "ETAP_SANITIZER_TIMEOUT"})
    tag = f"reliability_{device.replace(' ', '_')}_{report['date'][:10]}"
    if args.sanitize_only:
        print("compute-sanitizer", flush=True)
        report["sanitizer"] = sanitize(out_dir, args.tools.split(","))
        report["driver_cases"] = len(driver_cases())
        (out_dir / f"sanitizer_{tag[len('reliability_'):]}.json").write_text(json.dumps(report, indent=1))
        print_table(sanitizer_rows(report))
        sys.exit(1 if any(r["exit"] != 0 for r in report["sanitizer"]) else 0)
    print(f"{device}: fuzzing {args.cases} cases (seed {args.seed})", flush=True)
    report["fuzz"] = fuzz(args.cases, args.seed)
    print("graph replay", flush=True)
    report["graphs"] = [graph_replay(args.graph_steps, d, args.seed) for d in ("bf16", "fp8")]
    print("hostile inputs", flush=True)
    try:
        report["hostile"] = hostile_inputs()
    except Exception:  # noqa: BLE001
        report["hostile"] = [("suite", "FAIL: " + traceback.format_exc()[-400:])]
    if args.sanitize:
        print("compute-sanitizer", flush=True)
        report["sanitizer"] = sanitize(out_dir, args.tools.split(","))
        report["driver_cases"] = len(driver_cases())
    (out_dir / f"{tag}.json").write_text(json.dumps(report, indent=1))

    print()
    print_table(reliability_rows(report) + sanitizer_rows(report))
    print(f"\nwrote {out_dir / tag}.json")
    f = report["fuzz"]
    hostile_fail = sum(1 for _, r in report["hostile"] if not r.startswith("ok"))
    failed = f["failures"] or hostile_fail or any(g["mismatches"] for g in report["graphs"]) or any(
        r["exit"] != 0 for r in report.get("sanitizer", []))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
