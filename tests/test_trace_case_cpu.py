"""scripts/trace_case.py's parsing of the kernel's trace marks (CPU only)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import trace_case  # noqa: E402


def test_parse_and_summarize_steps():
    lines = ["noise", "ETAP_TRACE 0 1 100", "ETAP_TRACE 0 2 150", "ETAP_TRACE 0 1 400", "ETAP_TRACE 0 2 410"]
    cycle = 1000
    for _ in range(3):  # consumer warpgroup 0: three tiles, the same step lengths each
        for event, dt in ((4, 0), (5, 20), (6, 100), (7, 30), (8, 40), (9, 200)):
            cycle += dt
            lines.append(f"ETAP_TRACE 1 {event} {cycle}")
        cycle += 10
    marks = trace_case.parse("\n".join(lines))
    assert sorted(marks) == [0, 1] and len(marks[1]) == 18
    res = trace_case.summarize(marks)
    prod, cons = res["producer"], res["consumer warpgroup 0"]
    assert prod["tiles"] == 2 and prod["steps"]["wait for a free stage (empty barrier)"]["median"] == 30
    assert cons["tiles"] == 3
    steps = cons["steps"]
    assert steps["wait for the tile (full barrier)"]["median"] == 20
    assert steps["S^T WGMMAs"]["median"] == 100
    assert steps["O^T WGMMAs"]["median"] == 200
    assert steps["release, next tile"]["n"] == 2 and steps["release, next tile"]["median"] == 10
    assert "piece start (Q ready) to its first tile" not in steps  # no piece marks in this trace


def test_parse_ctas_spans_clock_and_cycles_per_tile():
    # part, group, start ns, span ns, span cycles, tiles
    text = "\n".join(["ETAP_TRACE 0 1 5", "ETAP_CTA 0 0 1000 300000 540000 120",
                      "ETAP_CTA 1 0 1500 200000 396000 90", "ETAP_CTA 2 0 900 250000 450000 100"])
    r = trace_case.parse_ctas(text)
    assert r["n"] == 3
    assert r["span_us"] == {"min": 200.0, "median": 250.0, "max": 300.0}
    assert r["kernel_us"] == round((1000 + 300000 - 900) / 1e3, 1)
    assert r["clock_mhz"] == {"min": 1800.0, "median": 1800.0, "max": 1980.0}
    assert r["cycles_per_tile"] == {"min": 4400.0, "median": 4500.0, "max": 4500.0}
    assert trace_case.parse_ctas("ETAP_TRACE 0 1 5") == {}
    csv = trace_case.cta_csv(text).splitlines()
    assert csv[0] == "block_x,block_y,start_ns,span_ns,span_cycles,tiles"
    assert csv[1:] == ["0,0,100,300000,540000,120", "1,0,600,200000,396000,90", "2,0,0,250000,450000,100"]


def test_start_mark_times_the_first_grant_q_and_tile():
    # 15 = the role starts; the producer's first grant, the consumer's Q and first tile after it
    text = "\n".join(["ETAP_TRACE 0 15 100", "ETAP_TRACE 0 1 900", "ETAP_TRACE 0 2 1000",
                      "ETAP_TRACE 1 15 120", "ETAP_TRACE 1 3 700", "ETAP_TRACE 1 4 710", "ETAP_TRACE 1 5 3120"])
    res = trace_case.summarize(trace_case.parse(text))
    assert res["producer"]["steps"]["start to its first stage granted (page ids fetched)"]["median"] == 900
    steps = res["consumer warpgroup 0"]["steps"]
    assert steps["start to its first piece's Q ready"]["median"] == 580
    assert steps["start to its first tile landed"]["median"] == 3000


def test_producer_marks_split_the_issue_step():
    # producer: 1 wait, 2 granted, 6 copies issued, 7 page ids landed, 8 page check passed, 1 ...
    text = "\n".join(f"ETAP_TRACE 0 {e} {c}" for e, c in
                     ((1, 0), (2, 100), (6, 160), (7, 900), (8, 950), (1, 951), (2, 1000)))
    steps = trace_case.summarize(trace_case.parse(text))["producer"]["steps"]
    assert steps["issue copies, next page ids"]["median"] == 851
    assert steps["  of which: issue a whole tile's copies, arrive on full"]["median"] == 60
    assert steps["  of which: next page ids prefetched, wait for this tile's"]["median"] == 740
    assert steps["  of which: page check (128-thread barrier)"]["median"] == 50
