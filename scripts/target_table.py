#!/usr/bin/env python3
"""The performance issues' targets against committed benchmark results, as one markdown table.

    python scripts/target_table.py results/DIR/bench_*_quick_*.json [--json OUT.json]

Reads ``bench_decode.py`` result files (bf16 and e4m3 quick grids, one device) and prints, per
target of the decode performance issue (bf16) and the FP8 issue (e4m3): the row, ETAP's median
time and percent of the copy bandwidth measured in that run, the peers' times from the same run,
the target and whether it is met. Only numbers from the files are printed. Exit 0 always: a missed
target is a result.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# (cache, label, row filter, target) with target kind "pct" (ETAP % of copy >= value),
# "flashmla" (ETAP time <= FlashMLA's time / value, i.e. speedup >= value) or "peers" (ETAP time
# <= every peer's time in that row).
H16 = dict(h_q=16, s_q=1, page_size=64, mixed=False)
TARGETS = [
    ("bf16", "b16/64K >= 96% of copy", dict(H16, b=16, ctx=65536), ("pct", 96.0)),
    ("bf16", "b16/8K >= 85% of copy", dict(H16, b=16, ctx=8192), ("pct", 85.0)),
    ("bf16", "b64/4K >= 85% of copy", dict(H16, b=64, ctx=4096), ("pct", 85.0)),
    ("bf16", "b1/64K >= 75% of copy", dict(H16, b=1, ctx=65536), ("pct", 75.0)),
    ("bf16", "every row: not slower than any peer", None, ("peers", None)),
    ("fp8", "b16/64K >= 90% of copy (H200)", dict(H16, b=16, ctx=65536), ("pct", 90.0)),
    ("fp8", "b16/64K >= 1.35x FlashMLA FP8 (H200)", dict(H16, b=16, ctx=65536), ("flashmla", 1.35)),
    ("fp8", "b16/8K >= 75% of copy", dict(H16, b=16, ctx=8192), ("pct", 75.0)),
    ("fp8", "b1/64K >= 60% of copy", dict(H16, b=1, ctx=65536), ("pct", 60.0)),
    ("fp8", "every row: not slower than FlashMLA FP8", None, ("peers", None)),
]
KEY = ("b", "s_q", "h_q", "ctx", "page_size", "mixed")
# ETAP's own variants are not peers (etap_split: ETAP on another cache layout; etap+X: switches)
NOT_PEERS = ("etap", "etap_split", "fi_etap")


def row_label(key: tuple) -> str:
    b, s_q, h_q, ctx, page, mixed = key
    ctx_s = f"{ctx // 1024}K" if ctx % 1024 == 0 else str(ctx)
    return f"b{b}/{ctx_s} h{h_q}" + (f" s_q {s_q}" if s_q != 1 else "") + (f" page {page}" if page != 64 else "") \
        + (" mixed" if mixed else "")


def load(paths) -> dict:
    """{cache: {row key: {impl: row dict}}} and {cache: meta} from result files."""
    rows, metas = {}, {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        for r in data["rows"]:
            key = tuple(bool(r.get(k)) if k == "mixed" else r[k] for k in KEY)
            rows.setdefault(r["kv"], {}).setdefault(key, {})[r["impl"]] = r
            metas.setdefault(r["kv"], dict(data["meta"], file=str(path)))
    return rows, metas


def is_peer(impl: str) -> bool:
    return impl not in NOT_PEERS and not impl.startswith("etap+")


def evaluate(rows: dict) -> list:
    out = []
    for kv, label, where, (kind, value) in TARGETS:
        grid = rows.get(kv, {})
        if where is None:  # every row: ETAP against each peer of that row
            ratios = [(impls["etap"]["us"] / r["us"], key, impl) for key, impls in sorted(grid.items())
                      if "etap" in impls for impl, r in impls.items() if is_peer(impl) and r.get("us")]
            if not ratios:
                out.append(dict(cache=kv, target=label, row="-", etap="not measured", peers="", met=None))
                continue
            worst = max(ratios, key=lambda x: x[0])
            slower = sum(1 for ratio, _, _ in ratios if ratio > 1.0)
            out.append(dict(cache=kv, target=label, row=f"worst: {row_label(worst[1])} vs {worst[2]}",
                            etap=f"{worst[0]:.2f}x its time", peers=f"{slower} row-peer pairs slower",
                            met=worst[0] <= 1.0))
            continue
        key = tuple(where[k] for k in KEY)
        impls = grid.get(key, {})
        etap = impls.get("etap")
        if etap is None:
            out.append(dict(cache=kv, target=label, row=row_label(key), etap="not measured", peers="", met=None))
            continue
        peers = ", ".join(f"{i} {r['us']:.1f}" for i, r in sorted(impls.items()) if is_peer(i) and r.get("us"))
        if kind == "pct":
            met = etap["pct_copy"] >= value
        else:
            fm = impls.get("flashmla")
            met = None if fm is None else fm["us"] / etap["us"] >= value
            if fm is not None:
                peers += f" (FlashMLA / ETAP = {fm['us'] / etap['us']:.2f})"
        out.append(dict(cache=kv, target=label, row=row_label(key),
                        etap=f"{etap['us']:.1f} us, {etap['pct_copy']:.1f}%", peers=peers, met=met))
    return out


def markdown(results: list, metas: dict) -> str:
    lines = []
    for kv, meta in sorted(metas.items()):
        lines.append(f"- {kv}: {meta.get('device')}, {meta.get('date')}, copy {meta.get('copy_gbs', 0):.0f} GB/s, "
                     f"`{meta.get('command')}` ({meta['file']})")
    lines += ["", "| cache | target | row | ETAP | peers, same run (us) | met |", "|---|---|---|---|---|---|"]
    for r in results:
        met = {True: "yes", False: "no", None: "-"}[r["met"]]
        lines.append(f"| {r['cache']} | {r['target']} | {r['row']} | {r['etap']} | {r['peers']} | {met} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", help="bench_decode.py result JSON files")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    rows, metas = load(args.files)
    results = evaluate(rows)
    print(markdown(results, metas))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(files=args.files, targets=results), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
