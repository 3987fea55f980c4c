#!/usr/bin/env python3
"""Where a call's time goes between its kernels: for benchmark rows, ETAP's and FlashMLA's time per
call (CUDA-graph replays, as ``bench_decode.py`` times them) beside each kernel's device time per
call (torch.profiler / CUPTI over the same replays). The rest is launch gaps inside the graph.

    python scripts/kernel_times.py --kv fp8 --where "h_q == 16 and s_q == 1 and page_size == 64"
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_decode as bench  # noqa: E402


def kernel_split(calls, replays: int = 5) -> dict:
    """Device time per call of each kernel name, profiled over graph replays of `calls`."""
    g = bench.capture_graph(calls)
    g.replay()
    torch.cuda.synchronize()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            g.replay()
        torch.cuda.synchronize()
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        prof.export_chrome_trace(f.name)
        events = json.load(open(f.name))["traceEvents"]
    kernels = sorted((e["ts"], e["dur"], e["name"][:60]) for e in events
                     if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memset", "gpu_memcpy"))
    n = replays * len(calls)
    per, gap_before = defaultdict(float), defaultdict(list)
    for i, (ts, dur, name) in enumerate(kernels):
        per[name] += dur
        if i:
            prev_ts, prev_dur, _ = kernels[i - 1]
            gap_before[name].append(ts - (prev_ts + prev_dur))
    span = (kernels[-1][0] + kernels[-1][1] - kernels[0][0]) if kernels else 0.0
    return dict(kernels={name: round(us / n, 2) for name, us in sorted(per.items(), key=lambda kv: -kv[1])},
                gap_before={name: round(statistics.median(g), 2) for name, g in gap_before.items()},
                profiled_us_per_call=round(span / n, 2))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kv", default="bf16", choices=("bf16", "fp8"))
    ap.add_argument("--where", default="h_q == 16 and s_q == 1 and page_size == 64")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    bench.set_warmup(0.1)
    flashmla = bench.load_flashmla_fp8() if args.kv == "fp8" else bench.load_flashmla()
    out = dict(device=torch.cuda.get_device_name(), date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
               command="python " + " ".join(sys.argv), torch=torch.__version__, kv=args.kv, rows=[])
    for row in bench.grid("quick"):
        if not eval(args.where, {}, dict(dict(mixed=False), **row)):  # noqa: S307 - dev tool
            continue
        case = bench.Case(**dict(row, kv=args.kv))
        for name, calls in (("etap", bench.etap_calls(case)), ("flashmla", bench.flashmla_calls(case, flashmla))):
            if not calls:
                continue
            bench.warm_gpu(lambda: [c() for c in calls], 0.1)
            graph_us = bench.graph_time(calls) * 1e6
            split = kernel_split(calls)
            kernels = split["kernels"]
            gap = graph_us - sum(kernels.values())
            out["rows"].append(dict(row, impl=name, graph_us=round(graph_us, 2), kernels_us=kernels,
                                    rest_us=round(gap, 2), gap_before_us=split["gap_before"],
                                    profiled_us_per_call=split["profiled_us_per_call"]))
            desc = ", ".join(f"{k.split('<')[0][-28:]} {v} (gap before {split['gap_before'].get(k)})"
                             for k, v in kernels.items())
            print(f"b={row['b']:>3} ctx={row['ctx']:>6} h={row['h_q']:>3} s_q={row['s_q']} page={row['page_size']:>2} "
                  f"{'mixed ' if row.get('mixed') else ''}{name:8s} graph {graph_us:7.1f} us, profiled "
                  f"{split['profiled_us_per_call']} | {desc} | graph - kernels {gap:.1f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
