#!/usr/bin/env python3
"""One summary table of the reliability evidence in a device session's result folder.

    python scripts/reliability_summary.py RESULT_DIR [--json OUT.json]

Reads what ``scripts/device_session.sh`` (or the scripts it runs) wrote there, in any subfolder:
``reliability_*.json`` (fuzzing, determinism, CUDA-graph replay, hostile inputs),
``sanitizer_*.json`` (compute-sanitizer tools) and ``sglang_load.json`` (server under load), and
prints one markdown table: check, cases / inputs tried, failures, notes. Exit 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path


# ETAP_* variables that locate things rather than change the kernel: left out of the row labels
NOT_SWITCHES = {"ETAP_FLASHMLA_SO", "ETAP_CACHE_DIR", "ETAP_SANITIZER_TIMEOUT", "ETAP_REQUIRE_GPU"}


def reliability_rows(rep: dict) -> list:
    """Rows of one scripts/reliability.py report: fuzzing, determinism, graphs, hostile inputs."""
    rows = []
    f = rep.get("fuzz")
    if f:
        guard = sum("guard" in c.get("reason", "") for c in f["failing_cases"])
        env = " ".join(f"{k}={v}" for k, v in sorted(rep.get("env", {}).items()) if k not in NOT_SWITCHES)
        rows.append(("fuzz vs float64 (guard regions around out/lse)" + (f" ({env})" if env else ""), f["cases"],
                     f["failures"],
                     f"dtypes {f['dtypes']}, page sizes {f['page_sizes']}, h_q {f['h_q']}, s_q {f['s_q']}, "
                     f"layouts {f['layouts']}, {f['strided']} strided, longest {f['max_len']}, "
                     f"{f['zero_len_seqs']} empty sequences; {guard} guard violations"))
        det = sum("determin" in c.get("reason", "") for c in f["failing_cases"])
        rows.append(("determinism (bitwise rerun)", f["determinism_checked"], det, "every 10th fuzz case"))
    for g in rep.get("graphs", []):
        rows.append((f"CUDA graph replay, {g['dtype']}", g["steps"], g["mismatches"],
                     "captured once; lengths and page table rewritten each step; bitwise vs eager"))
    hostile = rep.get("hostile")
    if hostile:
        bad = [name for name, res in hostile if not str(res).startswith("ok")]
        rows.append(("hostile inputs (kernel API, FlashInfer shim)", len(hostile), len(bad),
                     "failing: " + ", ".join(bad) if bad else "clear exception or the documented result each"))
    return rows


def sanitizer_rows(rep: dict) -> list:
    """Rows of a report's compute-sanitizer runs; failures are the tool's own findings."""
    rows = []
    for s in rep.get("sanitizer", []):
        # the tool's own findings ("ERROR SUMMARY: N errors", "RACECHECK SUMMARY: ... (N errors");
        # an exit status without findings is the driver's (a case outside tolerance)
        m = re.search(r"(\d+) errors", s["summary"])
        found = int(m.group(1)) if m else 1
        note = s["summary"].replace("=========", "").strip()
        if s["exit"] != 0 and found == 0:
            note += f"; driver exit {s['exit']} (a case outside its tolerance, not a tool finding)"
        env = " ".join(f"{k}={v}" for k, v in sorted(rep.get("env", {}).items()) if k not in NOT_SWITCHES)
        rows.append((f"compute-sanitizer {s['tool']}" + (f" ({env})" if env else ""), rep.get("driver_cases", "?"),
                     found, f"{note} ({s['seconds']} s)"))
    return rows


def load_rows(rep: dict) -> list:
    """Rows of one scripts/sglang_load.py result."""
    if "error" in rep:
        return [("SGLang server under load", rep.get("requests", 0), 1, rep["error"])]
    rows = []
    for phase in ("burst", "during_disconnects", "after_disconnects"):
        r = rep.get(phase)
        if r:
            fails = r["errors"] + r["wrong_length"] + r["mismatches"] + (r["expected"] - r["answered"])
            rows.append((f"SGLang server, {phase.replace('_', ' ')} ({rep['backend']}, {rep.get('device', '')})",
                         r["expected"], fails,
                         f"{r['identical']} identical to one-by-one, {r['near_ties']} first differ at a near tie; "
                         f"max |dlogp| {r['max_abs_logprob_diff']:.2e}"))
    rows.append(("SGLang server, alive after disconnects", rep.get("streams_dropped", 0),
                 0 if rep.get("health_after") and rep.get("server_alive") and not rep.get("log_tracebacks") else 1,
                 f"{rep.get('streams_dropped')} streams dropped mid-stream; /health {rep.get('health_after')}; "
                 f"{rep.get('log_tracebacks')} tracebacks in the server log"))
    return rows


def rows_of(folder: Path) -> list:
    rows = []
    for path in sorted(folder.rglob("reliability_*.json")):
        if path.name.startswith("reliability_summary"):  # this script's own output
            continue
        rep = json.loads(path.read_text())
        rows += reliability_rows(rep) + sanitizer_rows(rep)
    for path in sorted(folder.rglob("sanitizer_*.json")):
        rows += sanitizer_rows(json.loads(path.read_text()))
    for path in sorted(folder.rglob("sglang_load*.json")):
        rows += load_rows(json.loads(path.read_text()))
    return rows


def print_table(rows) -> None:
    print("| check | cases | failures | notes |\n|---|---|---|---|")
    for name, cases, fails, notes in rows:
        print(f"| {name} | {cases} | {fails} | {notes} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    rows = rows_of(args.folder)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps([dict(check=r[0], cases=r[1], failures=r[2], notes=r[3]) for r in rows], indent=1))
    return 1 if not rows or any(r[2] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
