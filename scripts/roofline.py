"""Roofline of MLA decode: bytes and FLOPs per case, and the time a device of given bandwidth and
matrix rate predicts with the heads unpadded (ETAP) or padded to a 64-row tile (FlashMLA).

    python scripts/roofline.py                       # H20-like: 148 TFLOP/s bf16, 4.0 TB/s
    python scripts/roofline.py --tflops 790 --tbps 4.27 --name H200
"""

from __future__ import annotations

import argparse


def case(b: int, ctx: int, h_q: int, s_q: int, kv_bytes: int):
    rows = h_q * s_q
    bytes_moved = b * ctx * 576 * kv_bytes + b * rows * (576 + 512) * 2
    flops = 2 * b * rows * ctx * (576 + 512)
    padded_rows = -(-rows // 64) * 64
    return bytes_moved, flops, flops * padded_rows // rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default="H20")
    ap.add_argument("--tflops", type=float, default=148.0, help="dense bf16 matrix rate")
    ap.add_argument("--tbps", type=float, default=4.0, help="memory bandwidth")
    ap.add_argument("--fp8-tflops", type=float, default=None, help="fp8 matrix rate (default 2x bf16)")
    args = ap.parse_args()
    fp8 = args.fp8_tflops or 2 * args.tflops
    print(f"{args.name}: {args.tflops:g} TFLOP/s bf16, {fp8:g} TFLOP/s fp8, {args.tbps:g} TB/s; b = 16, h_q = 16, s_q = 1\n")
    print("| cache | context | bytes (GB) | GFLOP unpadded | GFLOP padded to 64 | memory µs | ETAP µs | FlashMLA-style µs | predicted speedup |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kv_bytes, rate, label in ((2, args.tflops, "bf16"), (1, fp8, "fp8")):
        for ctx in (4096, 8192, 16384, 32768, 65536):
            nbytes, flops, padded = case(16, ctx, 16, 1, kv_bytes)
            t_mem = nbytes / (args.tbps * 1e12) * 1e6
            t_etap = max(t_mem, flops / (rate * 1e12) * 1e6)
            t_pad = max(t_mem, padded / (rate * 1e12) * 1e6)
            print(f"| {label} | {ctx} | {nbytes / 1e9:.3f} | {flops / 1e9:.1f} | {padded / 1e9:.1f} | {t_mem:.0f} | "
                  f"{t_etap:.0f} | {t_pad:.0f} | {t_pad / t_etap:.2f}x |")


if __name__ == "__main__":
    main()
