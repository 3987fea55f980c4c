"""Side-by-side MLA decode benchmark: ETAP vs FlashMLA vs FlashInfer (fa2/fa3) vs SGLang's Triton MLA
decode, one process, the same inputs, the device-to-device copy bandwidth measured in the same run.

    python scripts/bench_decode.py --grid quick          # a few rows
    python scripts/bench_decode.py --grid full           # the issue's grid (minutes)
    python scripts/bench_decode.py --grid paper          # batch 16, h_q 16, the paper's lengths
    python scripts/bench_decode.py --grid quick --kv fp8 # e4m3 cache: ETAP vs FlashMLA's FP8 path

Times are medians over CUDA-graph replays timed with CUDA events (no host overhead), each replay
cycling over several page tables into a KV pool larger than the L2 so the cache is not measured.
GB/s counts the KV bytes read once (b x len x 576 x 2 B, x 1 B for e4m3) plus q and out; TFLOP/s counts
2 x rows x len x (576 + 512). Results: results/bench_<device>_<date>.json/.csv and a PNG plot.
Peers that are not importable are skipped and listed as such (see scripts/baselines.py).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
import etap_kernels  # noqa: E402
from baselines import ensure_integration_importable, load_flashmla, load_flashmla_fp8  # noqa: E402

L2_BYTES = 50 * 2**20


def copy_bandwidth() -> float:
    """Device-to-device copy of 2 GiB, read + write bytes / median time (GB/s)."""
    n = 2**30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    return 2 * n / median_time(lambda: b.copy_(a), reps=10) / 1e9


def median_time(fn, reps=10, inner=1) -> float:
    """Seconds per call: median over `reps` timings of `inner` back-to-back calls, after one call
    and WARMUP_SECONDS of them (warm_gpu)."""
    fn()
    torch.cuda.synchronize()
    warm_gpu(fn, WARMUP_SECONDS)
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        for _ in range(inner):
            fn()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop) / 1e3 / inner)
    times.sort()
    return times[len(times) // 2]


def rotated(names: list, r: int) -> list:
    """names starting at index r (mod len): round r of --rounds times them in this order."""
    if not names:
        return []
    k = r % len(names)
    return names[k:] + names[:k]


# Seconds of back-to-back work before each timing. An idle H200 drops its SM clock to 345 MHz
# within one 200 ms nvidia-smi sample (results/h200_2026-11-30_dimsplit/smi_during_bench.csv),
# and a timing of 7 graph replays lasts a few ms: without this, the first column after a long
# CPU-only setup (page size 1 builds a million-entry page table) can catch the clock ramp.
WARMUP_SECONDS = 0.1


def set_warmup(seconds: float) -> None:
    global WARMUP_SECONDS
    WARMUP_SECONDS = max(0.0, seconds)


def warm_gpu(fn, seconds: float) -> None:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        torch.cuda.synchronize()


def capture_graph(calls) -> "torch.cuda.CUDAGraph":
    """`calls` (a list of closures) captured in one CUDA graph, after one warm-up run of each."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for c in calls:  # warm-up outside the capture
            c()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for c in calls:
            c()
    return g


def graph_time(calls, reps=7) -> float:
    """Captures `calls` in one CUDA graph; seconds per call."""
    return median_time(capture_graph(calls).replay, reps=reps) / len(calls)


class Case:
    def __init__(self, b, s_q, h_q, ctx, page_size, dtype=torch.bfloat16, mixed=False, seed=0, kv="bf16"):
        gen = torch.Generator().manual_seed(seed)
        self.b, self.s_q, self.h_q, self.page_size, self.dtype = b, s_q, h_q, page_size, dtype
        self.fp8 = kv == "fp8"
        kv_elem = 1 if self.fp8 else 2
        if mixed:  # uniform in [1, 2 * ctx): same mean, mixed lengths in one batch
            lens = torch.randint(1, 2 * ctx, (b,), generator=gen)
        else:
            lens = torch.full((b,), ctx)
        self.lens_list = lens.tolist()
        self.seqlens = lens.to(torch.int32).cuda()
        pages = [-(-n // page_size) for n in self.lens_list]
        self.max_pages = max(pages)
        need = sum(pages)
        bytes_per_page = page_size * 576 * kv_elem
        self.rotations = max(1, min(8, -(-4 * L2_BYTES // (need * bytes_per_page))))
        pool_pages = need * self.rotations + 1
        self.k_cache = torch.randn(pool_pages, page_size, 1, 576, dtype=dtype, device="cuda")
        if self.fp8:  # e4m3 values over most of the range, one per-tensor scale
            self.k_cache = (self.k_cache.float() * 40).clamp(-448, 448).to(torch.float8_e4m3fn)
            self.kv_scale = torch.tensor([0.025], dtype=torch.float32, device="cuda")
        perm = torch.randperm(pool_pages - 1, generator=gen) + 1
        self.block_tables, self.indices = [], []
        for r in range(self.rotations):
            chunk = perm[r * need:(r + 1) * need]
            bt = torch.zeros(b, self.max_pages, dtype=torch.int32)
            k = 0
            for i, n in enumerate(pages):
                bt[i, :n] = chunk[k:k + n]
                k += n
            self.block_tables.append(bt.cuda())
            self.indices.append(chunk.to(torch.int32).cuda())
        self.indptr = torch.tensor([0] + list(itertools.accumulate(pages)), dtype=torch.int32, device="cuda")
        self.q = torch.randn(b, s_q, h_q, 576, dtype=dtype, device="cuda")
        self.kv_bytes = sum(self.lens_list) * 576 * kv_elem
        self.io_bytes = self.kv_bytes + 2 * b * s_q * h_q * (576 + 512)
        self.flops = 2 * s_q * h_q * sum(self.lens_list) * (576 + 512)


def etap_calls(case: Case, split_caches: bool = False):
    """split_caches: the latent and rope parts in two contiguous caches (FlashInfer's paged layout:
    512- and 64-element rows) instead of views of the one 576-element-row cache. In e4m3 a 576-byte
    row puts every other row's 128-byte chunks across two 128-byte lines; 512-byte rows do not."""
    meta, splits = etap_kernels.get_mla_metadata(case.seqlens, case.s_q * case.h_q, 1, is_fp8_kvcache=case.fp8)
    ckv, kpe = case.k_cache[:, :, 0, :512], case.k_cache[:, :, 0, 512:]
    if split_caches:
        ckv, kpe = ckv.contiguous(), kpe.contiguous()
    qn, qr = case.q[..., :512], case.q[..., 512:]
    out = torch.empty(case.b, case.s_q, case.h_q, 512, dtype=case.dtype, device="cuda")
    lse = torch.empty(case.b, case.h_q, case.s_q, dtype=torch.float32, device="cuda")
    return [
        (lambda bt=bt: etap_kernels.mla_decode(qn, qr, ckv, kpe, case.seqlens, meta, splits, block_table=bt,
                                               causal=case.s_q > 1, out=out, lse=lse, validate_values=False,
                                               kv_scale=case.kv_scale if case.fp8 else None))
        for bt in case.block_tables
    ]


def flashmla_calls(case: Case, flashmla):
    if flashmla is None or case.page_size != 64:
        return None
    meta = flashmla.metadata(case.seqlens, case.s_q, case.h_q)
    if case.fp8:  # FlashMLA's FP8 path takes e4m3 queries with descales of shape (1,)
        q8 = (case.q.float() * 8).to(torch.float8_e4m3fn)
        ds_q = torch.tensor([0.125], dtype=torch.float32, device="cuda")
        return [(lambda bt=bt: flashmla(q8, case.k_cache, bt, case.seqlens, ds_q, case.kv_scale,
                                        causal=case.s_q > 1, meta=meta)) for bt in case.block_tables]
    return [(lambda bt=bt: flashmla(case.q, case.k_cache, bt, case.seqlens, causal=case.s_q > 1, meta=meta))
            for bt in case.block_tables]


def flashinfer_calls(case: Case, backend: str):
    try:
        from flashinfer.mla import BatchMLAPagedAttentionWrapper
    except Exception:  # noqa: BLE001 - not installed or not importable here
        return None
    ws = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    qo_indptr = torch.arange(0, (case.b + 1) * case.s_q, case.s_q, dtype=torch.int32, device="cuda")
    q_nope = case.q[..., :512].reshape(case.b * case.s_q, case.h_q, 512)
    q_pe = case.q[..., 512:].reshape(case.b * case.s_q, case.h_q, 64)
    ckv, kpe = case.k_cache[:, :, 0, :512], case.k_cache[:, :, 0, 512:]
    calls = []
    for idx in case.indices:
        w = BatchMLAPagedAttentionWrapper(ws, backend=backend)
        w.plan(qo_indptr, case.indptr, idx, case.seqlens, case.h_q, 512, 64, case.page_size, case.s_q > 1,
               576 ** -0.5, case.dtype, case.dtype)
        calls.append(lambda w=w: w.run(q_nope, q_pe, ckv, kpe))
    return calls


def flash_attn3_calls(case: Case):
    """FlashAttention-3's MLA path as SGLang's ``fa3`` backend calls it: sgl_kernel's
    ``flash_attn_with_kvcache(q=q_rope, k_cache=k_rope, v_cache=c_kv, qv=q_nope, page_table=...)``
    (needs ``sgl_kernel/flash_ops.abi3.so``, which the trimmed wheelhouse leaves out; see README)."""
    if case.fp8:
        return None
    try:
        from sgl_kernel.flash_attn import flash_attn_with_kvcache
    except Exception:  # noqa: BLE001 - sgl_kernel or its FA3 library not here
        return None
    q_nope, q_rope = case.q[..., :512], case.q[..., 512:]
    c_kv, k_rope = case.k_cache[..., :512], case.k_cache[..., 512:]
    return [(lambda bt=bt: flash_attn_with_kvcache(q=q_rope, k_cache=k_rope, v_cache=c_kv, qv=q_nope, page_table=bt,
                                                   cache_seqlens=case.seqlens, softmax_scale=576 ** -0.5,
                                                   causal=case.s_q > 1))
            for bt in case.block_tables]


def triton_calls(case: Case, max_kv_splits: int = 8):
    """SGLang's Triton MLA decode (``--attention-backend triton``), from the sglang wheel: token
    indices (page size 1 view of the pool), SGLang's default 8 KV splits and its split heuristic."""
    if case.s_q != 1 or case.fp8:
        return None  # SGLang's Triton decode kernel is s_q = 1 over a 16-bit cache
    try:
        from sglang.srt.layers.attention.triton_ops.decode_attention import decode_attention_fwd
    except Exception:  # noqa: BLE001 - sglang not installed here
        return None
    P = case.page_size
    k_buffer = case.k_cache.view(-1, 1, 576)
    v_buffer = k_buffer[..., :512]
    q = case.q.view(case.b, case.h_q, 576)
    out = torch.empty(case.b, case.h_q, 512, dtype=case.dtype, device="cuda")
    kv_indptr = torch.zeros(case.b + 1, dtype=torch.int32, device="cuda")
    kv_indptr[1:] = torch.cumsum(case.seqlens, 0)
    logits = torch.empty(case.b, case.h_q, max_kv_splits, 512, dtype=torch.float32, device="cuda")
    lse = torch.empty(case.b, case.h_q, max_kv_splits, dtype=torch.float32, device="cuda")
    num_kv_splits = torch.full((case.b,), max_kv_splits, dtype=torch.int32, device="cuda")
    try:  # SGLang's own per-sequence split count (triton_backend.get_num_kv_splits)
        import triton
        from sglang.srt.layers.attention.triton_backend import get_num_kv_splits_triton

        sms = torch.cuda.get_device_properties(0).multi_processor_count
        get_num_kv_splits_triton[(1,)](num_kv_splits, case.seqlens, case.b, 1, case.h_q, 1, max_kv_splits, sms,
                                       MAX_NUM_SEQ=max(256, triton.next_power_of_2(case.b)))
    except Exception:  # noqa: BLE001 - keep the static split count
        pass
    pos = torch.arange(case.max_pages * P, device="cuda")
    calls = []
    for bt in case.block_tables:
        tok = (bt.long()[:, :, None] * P + torch.arange(P, device="cuda")).view(case.b, -1)
        idx = tok[pos[None, :] < case.seqlens[:, None].long()].contiguous()
        calls.append(lambda idx=idx: (decode_attention_fwd(q, k_buffer, v_buffer, out, kv_indptr, idx, logits, lse,
                                                           num_kv_splits, max_kv_splits, 576 ** -0.5, 1.0, 1.0), out)[1])
    return calls


@contextlib.contextmanager
def switches(env: dict):
    """ETAP's experiment switches are read at each call (so at graph capture): set them meanwhile."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def output_errors(case: Case, impls: dict, variants: dict | None = None) -> dict:
    """RMSE and relative error of each implementation's output against the float64 reference on
    the case's first page table (the inputs every implementation saw)."""
    from etap_kernels.reference import mla_decode_reference

    kv_scale = float(case.kv_scale) if case.fp8 else 1.0
    ref, _ = mla_decode_reference(case.q[..., :512], case.q[..., 512:], case.k_cache[:, :, 0, :512],
                                  case.k_cache[:, :, 0, 512:], case.seqlens, block_table=case.block_tables[0],
                                  causal=case.s_q > 1, kv_scale=kv_scale)
    ref = ref.reshape(-1)
    errors = {}
    for name, calls in impls.items():
        if not calls:
            continue
        with switches((variants or {}).get(name, {})):
            res = calls[0]()
        out = res[0] if isinstance(res, (tuple, list)) else res
        torch.cuda.synchronize()
        diff = out.reshape(-1).double() - ref  # every implementation's output is [b, s_q, h_q, 512] in order
        errors[name] = dict(rmse=float(diff.square().mean().sqrt()), rel_err=float(diff.norm() / ref.norm()))
    return errors


def grid(name: str):
    if name == "paper":
        return [dict(b=16, s_q=1, h_q=16, ctx=c, page_size=64) for c in (4096, 8192, 16384, 32768, 65536)]
    if name == "quick":
        rows = [dict(b=b, s_q=1, h_q=16, ctx=c, page_size=64) for b, c in ((16, 65536), (16, 8192), (64, 4096), (1, 65536))]
        rows += [dict(b=16, s_q=1, h_q=h, ctx=65536, page_size=64) for h in (32, 64, 128)]
        rows += [dict(b=16, s_q=2, h_q=16, ctx=65536, page_size=64), dict(b=16, s_q=1, h_q=16, ctx=65536, page_size=1),
                 dict(b=64, s_q=1, h_q=16, ctx=4096, page_size=64, mixed=True)]
        return rows
    rows = []
    for b, c, h, s_q in itertools.product((1, 16, 64, 128), (1024, 4096, 8192, 16384, 32768, 65536, 131072),
                                          (16, 32, 64, 128), (1, 2)):
        if c == 131072 and b > 16:
            continue
        rows.append(dict(b=b, s_q=s_q, h_q=h, ctx=c, page_size=64))
    rows += [dict(b=b, s_q=1, h_q=16, ctx=c, page_size=1) for b, c in ((16, 65536), (16, 8192), (64, 4096))]
    rows += [dict(b=b, s_q=1, h_q=16, ctx=c, page_size=64, mixed=True) for b, c in ((16, 8192), (64, 4096))]
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default="quick", choices=("quick", "paper", "full"))
    ap.add_argument("--out", default=str(ROOT / "results"))
    ap.add_argument("--where", default=None, help="keep rows where this Python expression over the row's "
                    "fields is true, e.g. 'page_size == 1'")
    ap.add_argument("--tag", default="", help="suffix for the result file names")
    ap.add_argument("--rmse", action="store_true", help="also the RMSE and relative error of each output against "
                    "the float64 reference on the same inputs (columns rmse, rel_err)")
    ap.add_argument("--kv", default="bf16", choices=("bf16", "fp8"),
                    help="cache dtype: bf16, or e4m3 (peers: FlashMLA's FP8 path and etap_split only)")
    ap.add_argument("--peers", default="flashmla,fa2,fa3,fi_etap,triton,flash_attn3",
                    help="comma list of flashmla, fa2, fa3 (FlashInfer's), fi_etap (ETAP via the patched FlashInfer "
                         "wrapper), triton (SGLang's Triton MLA decode), flash_attn3 (FlashAttention-3's MLA path "
                         "from sgl_kernel), etap_split (ETAP itself on separate contiguous latent and rope caches; "
                         "not in the default list); peers that are not importable are skipped")
    ap.add_argument("--variants", default="",
                    help="comma list of ETAP experiment switches to time beside the default, each as its own "
                         "impl 'etap+NAME' (ETAP_<NAME>=1, or ETAP_<NAME>=V for NAME=V, while it is captured), "
                         "'+' joining several: e.g. kv_split_max_rows=16,kv_split_max_rows=32")
    ap.add_argument("--warmup-ms", type=float, default=1e3 * WARMUP_SECONDS,
                    help="milliseconds of back-to-back calls before each timing (lifts the SM clock out of idle)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="time every implementation this many times per row, each round in a rotated order, "
                         "and report the median of the rounds (each round's time is kept as us_rounds)")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    if args.warmup_ms < 0:
        ap.error("--warmup-ms must be >= 0")
    set_warmup(args.warmup_ms / 1e3)
    peers = args.peers.split(",") if args.peers else []
    # "name" sets ETAP_NAME=1, "name=value" sets ETAP_NAME=value; "+" joins several in one variant
    variants = {f"etap+{v}": dict((f"ETAP_{f.split('=')[0].upper()}", f.split("=", 1)[1] if "=" in f else "1")
                                  for f in v.split("+")) for v in args.variants.split(",") if v}
    ensure_integration_importable()
    if args.kv == "fp8":
        peers = [p for p in peers if p in ("flashmla", "etap_split")]
    flashmla = (load_flashmla_fp8() if args.kv == "fp8" else load_flashmla()) if "flashmla" in peers else None
    device = torch.cuda.get_device_name()
    copy_gbs = copy_bandwidth()
    print(f"{device}: copy {copy_gbs:.0f} GB/s", flush=True)
    results, skipped = [], set()
    header = f"{'b':>4} {'s_q':>3} {'h':>4} {'ctx':>7} {'page':>4} {'mix':>3} | {'impl':8} {'us':>9} {'GB/s':>6} {'%copy':>6} {'TF/s':>6} {'etap x':>7}"
    if args.rmse:
        header += f" {'rmse':>9}"
    print(header, flush=True)
    rows = grid(args.grid)
    if args.where:
        rows = [r for r in rows if eval(args.where, {}, dict(dict(mixed=False), **r))]  # noqa: S307 - dev tool
    for row in rows:
        row = dict(row, kv=args.kv)
        case = Case(**row)
        impls = {"etap": etap_calls(case)}
        for name in variants:
            impls[name] = etap_calls(case)
        if "etap_split" in peers:
            impls["etap_split"] = etap_calls(case, split_caches=True)
        if "flashmla" in peers:
            impls["flashmla"] = flashmla_calls(case, flashmla)
        if "flash_attn3" in peers:
            try:
                impls["flash_attn3"] = flash_attn3_calls(case)
            except Exception as exc:  # noqa: BLE001
                skipped.add(f"flash_attn3: {type(exc).__name__}: {str(exc)[:120]}")
        if "triton" in peers:
            try:
                impls["triton"] = triton_calls(case)
            except Exception as exc:  # noqa: BLE001
                skipped.add(f"triton: {type(exc).__name__}: {str(exc)[:120]}")
        for backend in ("fa2", "fa3", "etap"):  # "etap" = ETAP through FlashInfer's wrapper (patched)
            if backend in peers or f"fi_{backend}" in peers:
                try:
                    impls[f"fi_{backend}"] = flashinfer_calls(case, backend)
                except Exception as exc:  # noqa: BLE001 - a peer refusing a shape is a result, not a crash
                    skipped.add(f"fi_{backend}: {type(exc).__name__}: {str(exc)[:120]}")
                    impls[f"fi_{backend}"] = None
        errors = {}
        if args.rmse:
            try:
                errors = output_errors(case, impls, variants)
            except Exception as exc:  # noqa: BLE001 - a peer failing here is recorded, timing goes on
                skipped.add(f"rmse: {type(exc).__name__}: {str(exc)[:120]}")
        def time_impl(name, calls):
            try:
                with switches(variants.get(name, {})):
                    return graph_time(calls)
            except Exception as exc:  # noqa: BLE001 - fall back to back-to-back eager launches
                skipped.add(f"{name}: timed eagerly, graph capture failed: {type(exc).__name__}: {str(exc)[:100]}")
                torch.cuda.synchronize()
                try:
                    return median_time(lambda: [c() for c in calls], reps=7, inner=3) / len(calls)
                except Exception as exc2:  # noqa: BLE001
                    skipped.add(f"{name}: {type(exc2).__name__}: {str(exc2)[:120]}")
                    return None

        for name, calls in impls.items():
            if calls is None:
                skipped.add(f"{name}: not run on some rows (not importable here, or not for this shape)")
        runnable = [name for name, calls in impls.items() if calls is not None]
        samples = {name: [] for name in runnable}
        for r in range(args.rounds):  # round r starts at the r-th implementation: no fixed order
            for name in rotated(runnable, r):
                t = time_impl(name, impls[name])
                if t is not None:
                    samples[name].append(t)
        times = {name: statistics.median(ts) for name, ts in samples.items() if ts}
        for name, t in times.items():
            gbs = case.io_bytes / t / 1e9
            rec = dict(row, mixed=row.get("mixed", False), impl=name, us=t * 1e6, gbs=gbs,
                       pct_copy=100 * gbs / copy_gbs, tflops=case.flops / t / 1e12,
                       etap_speedup=times[name] / times["etap"] if "etap" in times else None,
                       rmse=errors.get(name, {}).get("rmse"), rel_err=errors.get(name, {}).get("rel_err"),
                       us_rounds=[round(x * 1e6, 2) for x in samples[name]])
            results.append(rec)
            print(f"{row['b']:>4} {row['s_q']:>3} {row['h_q']:>4} {row['ctx']:>7} {row['page_size']:>4} "
                  f"{'y' if rec['mixed'] else '':>3} | {name:8} {rec['us']:9.1f} {gbs:6.0f} {rec['pct_copy']:6.1f} "
                  f"{rec['tflops']:6.1f} {rec['etap_speedup'] or 0:7.2f}"
                  + (f" {rec['rmse']:9.2e}" if rec["rmse"] is not None else ""), flush=True)
        del case, impls
        torch.cuda.empty_cache()
    meta = dict(device=device, date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                command="python " + " ".join(sys.argv), copy_gbs=copy_gbs, torch=torch.__version__,
                cuda=torch.version.cuda, python=platform.python_version(), grid=args.grid,
                variants=variants, skipped=sorted(skipped), method="CUDA-graph replays, CUDA events, median of 7; rotating page tables",
                rounds=args.rounds, warmup_ms=1e3 * WARMUP_SECONDS)
    if not results:
        sys.exit("no results")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    kv_tag = "_fp8" if args.kv == "fp8" else ""
    tag = f"{device.replace(' ', '_')}_{args.grid}{kv_tag}{args.tag}_{meta['date'][:10]}"
    (out_dir / f"bench_{tag}.json").write_text(json.dumps(dict(meta=meta, rows=results), indent=1))
    with open(out_dir / f"bench_{tag}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(results[0].keys()))
        w.writeheader()
        w.writerows(results)
    plot(results, out_dir / f"bench_{tag}.png", device, copy_gbs, args.kv)
    if skipped:
        print("skipped:", *sorted(skipped), sep="\n  ")
    print(f"wrote {out_dir}/bench_{tag}.{{json,csv,png}}")


def plot(results, path, device, copy_gbs, kv="bf16"):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = [r for r in results if r["page_size"] == 64 and not r["mixed"] and r["s_q"] == 1 and r["b"] == 16]
    heads = sorted({r["h_q"] for r in rows})
    if not heads:
        return
    fig, axes = plt.subplots(1, len(heads), figsize=(4.5 * len(heads), 3.6), squeeze=False)
    for ax, h in zip(axes[0], heads):
        for impl in sorted({r["impl"] for r in rows}):
            pts = sorted((r["ctx"], r["gbs"]) for r in rows if r["h_q"] == h and r["impl"] == impl)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=impl)
        ax.axhline(copy_gbs, color="gray", ls="--", lw=0.8, label="copy")
        ax.set_xscale("log", base=2)
        ax.set_title(f"b=16, h_q={h}, {'e4m3' if kv == 'fp8' else 'bf16'} cache, page 64")
        ax.set_xlabel("context length")
        ax.set_ylabel("GB/s")
        ax.legend(fontsize=7)
    fig.suptitle(device)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
