#!/usr/bin/env python3
"""Where one CTA's time goes, tile by tile: runs one benchmark case with a trace build of the
kernel (``-DETAP_TRACE``: thread 0 of each warpgroup of CTA (0, 0) records ``clock64()`` at fixed
points, see ``Trace`` in decode_kernel.cuh) and prints the median cycles of each step per tile.

    python scripts/trace_case.py --kv fp8                 # b = 16, 64K, h_q = 16, e4m3 cache
    python scripts/trace_case.py --h-q 64 --json out.json

The trace build is a separate extension (``ETAP_EXTRA_NVCC_FLAGS=-DETAP_TRACE`` is part of the
build cache key); the marks cost a few instructions and local-memory stores per tile, so absolute
times are a little longer than the benchmark's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ["ETAP_EXTRA_NVCC_FLAGS"] = (os.environ.get("ETAP_EXTRA_NVCC_FLAGS", "") + " -DETAP_TRACE").strip()

# (from event, to event, name): consumer steps of one tile, the producer's wait for a free stage
STEPS = [
    (4, 5, "wait for the tile (full barrier)"),
    (5, 6, "S^T WGMMAs"),
    (6, 7, "scale, mask, column max (incl. cross-warp barrier)"),
    (7, 8, "exp, rescale O, P^T to shared memory (incl. barrier)"),
    (8, 9, "O^T WGMMAs"),
    (9, 4, "release, next tile"),
    (3, 4, "piece start (Q ready) to its first tile"),
    (9, 10, "piece's last tile to its output written (merge, epilogue)"),
    (10, 3, "piece written to the next piece's Q ready"),
    # heads on M (heads_on_m.cuh): the owner's steps are 4 -> 5 (S, issued early or now), 5 -> 6
    # (scale, mask, row max), 6 -> 8 (exp, P handed over), 8 -> 9 (its O half); the other's:
    (4, 6, "heads on M, owner: tile and S to row max"),
    (11, 12, "heads on M, other: next tile's S issued early (or not)"),
    (12, 13, "heads on M, other: wait for the owner's P"),
    (13, 14, "heads on M, other: rescale, O WGMMAs (and a late S)"),
    # the start of the CTA's work (15: the role starts, after the register split)
    (15, 3, "start to its first piece's Q ready"),
    (15, 5, "start to its first tile landed"),
]
PRODUCER_STEPS = [(1, 2, "wait for a free stage (empty barrier)"), (2, 1, "issue copies, next page ids"),
                  # the producer's own 6, 7, 8 split that step (whole tiles)
                  (2, 6, "  of which: issue a whole tile's copies, arrive on full"),
                  (6, 7, "  of which: next page ids prefetched, wait for this tile's"),
                  (7, 8, "  of which: page check (128-thread barrier)"),
                  (15, 2, "start to its first stage granted (page ids fetched)")]


def parse(text: str) -> dict:
    """ETAP_TRACE lines -> {who: [(event, cycle), ...]} in program order."""
    marks: dict = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == "ETAP_TRACE":
            marks.setdefault(int(parts[1]), []).append((int(parts[2]), int(parts[3])))
    return marks


def cta_rows(text: str) -> list:
    """ETAP_CTA lines (every CTA's consumer warpgroup 0) as tuples (block x, block y, start ns,
    span ns, span cycles, tiles)."""
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 7 and parts[0] == "ETAP_CTA":
            rows.append(tuple(int(x) for x in parts[1:]))
    return rows


def parse_ctas(text: str) -> dict:
    """The spread of the CTAs' spans, the SM clock (cycles / ns) and cycles per tile over all CTAs."""
    rows = cta_rows(text)
    if not rows:
        return {}

    def spread(xs):
        return dict(min=round(min(xs), 1), median=round(statistics.median(xs), 1), max=round(max(xs), 1))

    start = min(r[2] for r in rows)
    return dict(
        n=len(rows),
        span_us=spread([r[3] / 1e3 for r in rows]),
        kernel_us=round((max(r[2] + r[3] for r in rows) - start) / 1e3, 1),
        clock_mhz=spread([r[4] / r[3] * 1e3 for r in rows if r[3] > 0]),
        cycles_per_tile=spread([r[4] / r[5] for r in rows if r[5] > 0]),
    )


def cta_csv(text: str) -> str:
    """Every CTA's ETAP_CTA row as CSV, start times relative to the earliest CTA's."""
    rows = cta_rows(text)
    t0 = min((r[2] for r in rows), default=0)
    lines = ["block_x,block_y,start_ns,span_ns,span_cycles,tiles"]
    lines += [f"{r[0]},{r[1]},{r[2] - t0},{r[3]},{r[4]},{r[5]}" for r in sorted(rows)]
    return "\n".join(lines) + "\n"


def step_cycles(seq, a: int, b: int) -> list:
    """Cycles from each event a to the next event b after it (same thread)."""
    out = []
    for i, (e, c) in enumerate(seq):
        if e != a:
            continue
        for e2, c2 in seq[i + 1:]:
            if e2 == b:
                out.append(c2 - c)
                break
            if e2 == a:
                break
    return out


def summarize(marks: dict) -> dict:
    res = {}
    for who, seq in sorted(marks.items()):
        steps = PRODUCER_STEPS if who == 0 else STEPS
        name = "producer" if who == 0 else f"consumer warpgroup {who - 1}"
        span = seq[-1][1] - seq[0][1] if seq else 0
        tiles = sum(1 for e, _ in seq if e == (2 if who == 0 else 5))
        rows = {}
        for a, b, what in steps:
            xs = step_cycles(seq, a, b)
            if xs:
                rows[what] = dict(median=statistics.median(xs), mean=round(statistics.fmean(xs), 1), n=len(xs))
        res[name] = dict(tiles=tiles, span_cycles=span, cycles_per_tile=round(span / max(tiles, 1), 1), steps=rows)
    return res


def print_timeline(marks: dict, first: int, last: int) -> None:
    """Every mark between the producer's grant of stage-tile `first` (event 2) and of `last`,
    all roles merged by cycle, relative to the first: where each role waits, tile by tile."""
    grants = [c for e, c in marks.get(0, []) if e == 2]
    if len(grants) <= last:
        print(f"timeline: only {len(grants)} producer tiles")
        return
    lo, hi = grants[first], grants[last]
    rows = sorted((c, who, e) for who, seq in marks.items() for e, c in seq if lo <= c <= hi)
    print(f"timeline, producer tiles {first}..{last} (cycle relative to the first grant; role: event)")
    for c, who, e in rows:
        print(f"  {c - lo:>8} {'producer' if who == 0 else f'wg{who - 1}':>8}: {e}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--b", type=int, default=16)
    ap.add_argument("--s-q", type=int, default=1)
    ap.add_argument("--h-q", type=int, default=16)
    ap.add_argument("--ctx", type=int, default=65536)
    ap.add_argument("--page-size", type=int, default=64)
    ap.add_argument("--kv", default="bf16", choices=("bf16", "fp8"))
    ap.add_argument("--json", default=None, help="also write the summary here")
    ap.add_argument("--ctas", default=None, metavar="CSV",
                    help="also write every CTA's row here (block, start ns after the first CTA's, span ns, cycles, tiles)")
    ap.add_argument("--timeline", default=None, metavar="FROM:TO",
                    help="also print every mark of the producer's tiles FROM..TO, all roles merged in time")
    args = ap.parse_args(argv)

    import torch

    sys.path.insert(0, str(ROOT / "scripts"))
    import bench_decode as bench

    case = bench.Case(b=args.b, s_q=args.s_q, h_q=args.h_q, ctx=args.ctx, page_size=args.page_size, kv=args.kv)
    calls = bench.etap_calls(case)

    def captured(call) -> str:
        """Device printf goes to the C-level stdout when the stream synchronises: catch fd 1."""
        with tempfile.TemporaryFile(mode="w+") as tmp:
            sys.stdout.flush()
            saved = os.dup(1)
            os.dup2(tmp.fileno(), 1)
            try:
                call()
                torch.cuda.synchronize()
            finally:
                sys.stdout.flush()
                os.dup2(saved, 1)
                os.close(saved)
            tmp.seek(0)
            return tmp.read()

    captured(calls[0])  # builds the trace extension and warms up; its marks are dropped
    text = captured(calls[1 % len(calls)])
    res = summarize(parse(text))
    ctas = parse_ctas(text)
    clock_ghz = torch.cuda.get_device_properties(0).clock_rate / 1e6 if hasattr(
        torch.cuda.get_device_properties(0), "clock_rate") else None
    out = dict(case=vars(args), device=torch.cuda.get_device_name(), sm_clock_ghz=clock_ghz, threads=res)
    print(f"{out['device']}: b={args.b} s_q={args.s_q} h_q={args.h_q} ctx={args.ctx} page={args.page_size} "
          f"kv={args.kv}; CTA (0, 0)")
    for name, r in res.items():
        print(f"  {name}: {r['tiles']} tiles, {r['cycles_per_tile']} cycles per tile")
        for what, st in r["steps"].items():
            print(f"    {what:55s} median {st['median']:>8} cycles (n = {st['n']})")
    if ctas:
        out["ctas"] = ctas
        print(f"  all CTAs ({ctas['n']}): span {ctas['span_us']['min']}..{ctas['span_us']['max']} us "
              f"(median {ctas['span_us']['median']}), kernel {ctas['kernel_us']} us; SM clock "
              f"{ctas['clock_mhz']['min']}..{ctas['clock_mhz']['max']} MHz; cycles per tile "
              f"{ctas['cycles_per_tile']['min']}..{ctas['cycles_per_tile']['max']} (median {ctas['cycles_per_tile']['median']})")
    if args.timeline:
        print_timeline(parse(text), *(int(x) for x in args.timeline.split(":")))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    if args.ctas:
        Path(args.ctas).write_text(cta_csv(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
