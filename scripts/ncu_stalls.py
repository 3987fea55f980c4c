#!/usr/bin/env python3
"""Where the warps of a kernel wait, from Nsight Compute's per-instruction stall samples.

    ncu --kernel-name regex:decode_kernel --launch-skip 3 --launch-count 1 --set full -o /tmp/rep \\
        python3 scripts/profile_case.py
    ncu -i /tmp/rep.ncu-rep --page source --csv --print-source sass | gzip > sass.csv.gz
    python3 scripts/ncu_stalls.py sass.csv.gz

Splits the decode kernel's SASS into the consumer warpgroups' part (between the register
reallocation ``USETMAXREG.TRY_ALLOC`` and ``USETMAXREG.DEALLOC``) and the producer's (after
it), and sums each part's samples by what the instruction does: an mbarrier wait loop (the branch
after ``SYNCS.PHASECHK``), a wait for WGMMAs (``WARPGROUP.DEPBAR``), WGMMA issue (``HGMMA``), a
named barrier (``BAR``), or anything else (softmax math, addressing). Prints the stall reasons
overall and the instructions with the most samples.
"""

from __future__ import annotations

import argparse
import collections
import csv
import gzip
import sys


SAMPLES = "Warp Stall Sampling (All Samples)"


def load(path: str):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        rows = list(csv.reader(f))
    start = next((i for i, r in enumerate(rows) if r and r[0] == "Address"), None)
    if start is None or SAMPLES not in rows[start] or "Source" not in rows[start]:
        raise ValueError(f"{path}: no 'Address', 'Source' and '{SAMPLES}' columns: not the output of "
                         "ncu --page source --csv --print-source sass")
    header = rows[start]
    return header, [r for r in rows[start + 1:] if len(r) == len(header)]


def kind_of(sass: str, wait_pred: str) -> str:
    """wait_pred: the predicate a recent SYNCS.PHASECHK set (its retry branch waits on it)."""
    if "PHASECHK" in sass or (wait_pred and "BRA" in sass and sass.startswith(f"@!{wait_pred}")):
        return "mbarrier wait loop"
    if "WARPGROUP.DEPBAR" in sass:
        return "wait for WGMMAs"
    if "HGMMA" in sass or "WARPGROUP.ARRIVE" in sass:
        return "WGMMA issue"
    if sass.startswith("BAR") or " BAR." in sass or "B2R" in sass:
        return "named barrier"
    return "other"


def summarize(header, rows, top: int = 15) -> dict:
    col = {h: i for i, h in enumerate(header)}
    samples = col[SAMPLES]
    reasons = [h for h in header if h.startswith("stall_") and "Not Issued" not in h]

    def n(r, i):
        try:
            return int(r[i])
        except ValueError:
            return 0

    part, parts, by_reason = "prologue", collections.defaultdict(collections.Counter), collections.Counter()
    wait_pred, window = "", 0
    for r in rows:
        sass = r[col["Source"]].strip()
        if "USETMAXREG.TRY_ALLOC" in sass:
            part = "consumer"
        elif "USETMAXREG.DEALLOC" in sass:
            part = "producer"
        parts[part][kind_of(sass, wait_pred if window > 0 else "")] += n(r, samples)
        for h in reasons:
            by_reason[h] += n(r, col[h])
        window -= 1
        if "PHASECHK" in sass:  # "SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [...]": P0 is the result
            wait_pred, window = sass.split("TRYWAIT")[1].split(",")[0].strip(), 8
    hot = sorted(rows, key=lambda r: -n(r, samples))[:top]
    return dict(
        parts={p: dict(c) for p, c in parts.items()},
        reasons=dict(by_reason.most_common()),
        hot=[(r[0], n(r, samples), r[col["Source"]].strip()) for r in hot],
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", help="ncu --page source --csv --print-source sass output (optionally .gz)")
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args(argv)
    try:
        res = summarize(*load(args.csv), top=args.top)
    except ValueError as exc:
        ap.error(str(exc))
    for p, c in res["parts"].items():
        total = sum(c.values())
        if not total:
            continue
        print(f"{p}: {total} samples")
        for k, v in sorted(c.items(), key=lambda kv: -kv[1]):
            print(f"  {k:22s} {v:7d}  {100 * v / total:5.1f}%")
    total = sum(res["reasons"].values()) or 1
    print("stall reasons (all warps):")
    for k, v in list(res["reasons"].items())[:10]:
        print(f"  {k:26s} {v:7d}  {100 * v / total:5.1f}%")
    print("hottest instructions:")
    for a, v, s in res["hot"]:
        print(f"  {a[-6:]} {v:6d}  {s[:70]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
