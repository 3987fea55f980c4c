#!/usr/bin/env python3
"""Run one benchmark case a few times, eagerly, for a profiler to attach to (no timing here).

    ncu --kernel-name regex:decode_kernel --launch-skip 3 --launch-count 1 --set full \\
        --import-source yes -o /tmp/etap_page1 python scripts/profile_case.py --page-size 1
    ncu ... python scripts/profile_case.py --impl fi_fa3 --page-size 1      # the peer, same inputs

The inputs are those of ``scripts/bench_decode.py`` (``Case``: random lengths or fixed, shuffled
pages, rotating page tables); ``--impl`` picks ETAP or one of its peers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_decode as bench  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impl", default="etap", help="etap, flashmla, fi_fa2, fi_fa3, triton, flash_attn3")
    ap.add_argument("--b", type=int, default=16)
    ap.add_argument("--s-q", type=int, default=1)
    ap.add_argument("--h-q", type=int, default=16)
    ap.add_argument("--ctx", type=int, default=65536)
    ap.add_argument("--page-size", type=int, default=64)
    ap.add_argument("--mixed", action="store_true")
    ap.add_argument("--kv", default="bf16", choices=("bf16", "fp8"))
    ap.add_argument("--iters", type=int, default=6)
    args = ap.parse_args(argv)
    bench.ensure_integration_importable()
    case = bench.Case(b=args.b, s_q=args.s_q, h_q=args.h_q, ctx=args.ctx, page_size=args.page_size,
                      mixed=args.mixed, kv=args.kv)
    if args.impl == "etap":
        calls = bench.etap_calls(case)
    elif args.impl == "flashmla":
        calls = bench.flashmla_calls(case, bench.load_flashmla_fp8() if case.fp8 else bench.load_flashmla())
    elif args.impl.startswith("fi_"):
        calls = bench.flashinfer_calls(case, args.impl[3:])
    elif args.impl == "triton":
        calls = bench.triton_calls(case)
    elif args.impl == "flash_attn3":
        calls = bench.flash_attn3_calls(case)
    else:
        sys.exit(f"unknown --impl {args.impl}")
    if not calls:
        sys.exit(f"{args.impl} cannot run this case here")
    for i in range(args.iters):
        calls[i % len(calls)]()
    torch.cuda.synchronize()
    print(f"{args.impl}: {args.iters} launches of b={args.b} s_q={args.s_q} h_q={args.h_q} ctx={args.ctx} "
          f"page={args.page_size} kv={args.kv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
