"""CPU test of scripts/ncu_stalls.py on a small synthetic per-instruction SASS table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import ncu_stalls  # noqa: E402

HEADER = ["Address", "Source", "Warp Stall Sampling (All Samples)", "stall_barrier", "stall_long_sb",
          "stall_barrier (Not Issued)"]
SASS = [
    ("0x10", "LDC R1, c[0x0][0x28]", 1, 0, 0),
    ("0x20", "USETMAXREG.TRY_ALLOC.CTAPOOL UP0, 0xe8", 0, 0, 0),
    ("0x30", "SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [R82+URZ+0x29808], R57", 2, 0, 0),
    ("0x40", "IMAD R1, R2, R3, RZ", 1, 0, 0),
    ("0x50", "@!P0  BRA 0x900", 30, 0, 30),
    ("0x60", "HGMMA.64x8x16.F32.BF16 R68, gdesc[UR8], RZ, !UPT", 5, 0, 0),
    ("0x70", "WARPGROUP.DEPBAR.LE gsb0, 0x0", 20, 20, 0),
    ("0x80", "FMNMX.FTZ R59, R56, R59, !PT", 7, 0, 0),
    ("0x90", "@!P1  BRA 0x100", 3, 0, 0),  # not an mbarrier retry: P1 was not set by PHASECHK
    ("0xa0", "USETMAXREG.DEALLOC.CTAPOOL 0x28", 0, 0, 0),
    ("0xb0", "B2R.RESULT RZ, P0", 40, 40, 0),
]


def write(tmp_path):
    path = tmp_path / "sass.csv"
    lines = ['"Kernel Name","decode_kernel",', ",".join(f'"{h}"' for h in HEADER)]
    for a, s, n, b, l in SASS:
        lines.append(",".join(f'"{v}"' for v in (a, s, n, b, l, 0)))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_parts_and_kinds(tmp_path):
    res = ncu_stalls.summarize(*ncu_stalls.load(str(write(tmp_path))))
    assert res["parts"]["consumer"] == {"mbarrier wait loop": 32, "other": 11, "WGMMA issue": 5,
                                        "wait for WGMMAs": 20}
    assert res["parts"]["producer"] == {"other": 0, "named barrier": 40}
    assert res["reasons"] == {"stall_barrier": 60, "stall_long_sb": 30}
    assert res["hot"][0][1] == 40 and "B2R" in res["hot"][0][2]
    assert ncu_stalls.main([str(write(tmp_path)), "--top", "3"]) == 0


def test_other_csv_is_refused_by_name(tmp_path):
    path = tmp_path / "raw.csv"
    path.write_text('"ID","Kernel Name"\n"0","decode_kernel"\n')
    with pytest.raises(ValueError, match="raw.csv.*--page source"):
        ncu_stalls.load(str(path))
    with pytest.raises(SystemExit):
        ncu_stalls.main([str(path)])
