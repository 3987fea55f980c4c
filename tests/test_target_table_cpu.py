"""scripts/target_table.py on hand-made result files: each target met or missed as the numbers say."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import target_table  # noqa: E402


def _row(kv, b, ctx, impl, us, pct, h_q=16, s_q=1):
    return dict(b=b, s_q=s_q, h_q=h_q, ctx=ctx, page_size=64, kv=kv, mixed=False, impl=impl, us=us, pct_copy=pct)


def _write(tmp_path, name, kv, rows):
    meta = dict(device="GPU", date="d", command="c", copy_gbs=4000.0)
    path = tmp_path / name
    path.write_text(json.dumps(dict(meta=meta, rows=rows)))
    return str(path)


def test_targets_met_and_missed(tmp_path, capsys):
    bf16 = _write(tmp_path, "bf16.json", "bf16", [
        _row("bf16", 16, 65536, "etap", 300.0, 97.0), _row("bf16", 16, 65536, "flashmla", 290.0, 100.0),
        _row("bf16", 16, 8192, "etap", 50.0, 86.0), _row("bf16", 16, 8192, "fi_fa3", 55.0, 78.0),
        _row("bf16", 16, 65536, "etap_split", 100.0, 99.0),  # ETAP itself: never a peer
    ])
    fp8 = _write(tmp_path, "fp8.json", "fp8", [
        _row("fp8", 16, 65536, "etap", 160.0, 91.0), _row("fp8", 16, 65536, "flashmla", 220.0, 66.0),
        _row("fp8", 1, 65536, "etap", 30.0, 30.0),
    ])
    rows, metas = target_table.load([bf16, fp8])
    res = {(r["cache"], r["target"]): r for r in target_table.evaluate(rows)}
    assert res[("bf16", "b16/64K >= 96% of copy")]["met"] is True
    assert res[("bf16", "b16/8K >= 85% of copy")]["met"] is True
    assert res[("bf16", "b64/4K >= 85% of copy")]["met"] is None  # not in the files
    every = res[("bf16", "every row: not slower than any peer")]
    assert every["met"] is False and "flashmla" in every["row"] and "1.03x" in every["etap"]
    assert res[("fp8", "b16/64K >= 90% of copy (H200)")]["met"] is True
    assert res[("fp8", "b16/64K >= 1.35x FlashMLA FP8 (H200)")]["met"] is True  # 220 / 160 = 1.375
    assert res[("fp8", "b1/64K >= 60% of copy")]["met"] is False
    assert res[("fp8", "every row: not slower than FlashMLA FP8")]["met"] is True
    assert target_table.main([bf16, fp8, "--json", str(tmp_path / "t.json")]) == 0
    assert "| bf16 | b16/64K >= 96% of copy |" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "t.json").read_text())["targets"]) == len(target_table.TARGETS)
