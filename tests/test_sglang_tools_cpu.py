"""CPU tests of the end-to-end and load-test tools (scripts/sglang_e2e.py, scripts/sglang_load.py).

The greedy comparison is checked on hand-made runs; the load test's client side (burst,
mid-stream disconnects, health) against a small fake SGLang HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import sglang_e2e as e2e  # noqa: E402
import sglang_load as load  # noqa: E402


def run(tokens, logprobs, top2=None):
    return {"tokens": tokens, "logprobs": logprobs, "top": top2 or [[] for _ in tokens]}


def test_divergence_identical_and_within_tolerance():
    ref = run([5, 6, 7], [-1.0, -2.0, -3.0])
    d = e2e.divergence(run([5, 6, 7], [-1.01, -2.0, -3.02]), ref, tol=0.05, tie_tol=0.05)
    assert d["first_divergence"] is None and d["ok"] and d["max_abs_logprob_diff"] == pytest.approx(0.02)
    assert not e2e.divergence(run([5, 6, 7], [-1.2, -2.0, -3.0]), ref, tol=0.05, tie_tol=0.05)["ok"]


def test_divergence_near_tie_accepted_real_mismatch_refused():
    ref = run([5, 6, 7], [-1.0, -2.00, -3.0], [[[-1.0, 5], [-4.0, 9]], [[-2.00, 6], [-2.03, 8], [-2.5, 4]], [[-3.0, 7], [-5.0, 1]]])
    tie = e2e.divergence(run([5, 8, 1], [-1.0, -2.03, -9.0]), ref, tol=0.05, tie_tol=0.05)
    assert tie["first_divergence"] == 1 and tie["near_tie"] and tie["ok"] and tie["tie_rule"] == "b"
    assert tie["gap_at_divergence"] == pytest.approx(0.03)
    far = e2e.divergence(run([9, 6, 7], [-4.0, -2.0, -3.0]), ref, tol=0.05, tie_tol=0.05)  # 3.0 behind
    assert far["first_divergence"] == 0 and not far["near_tie"] and not far["ok"]
    unknown = e2e.divergence(run([5, 3, 7], [-1.0, -2.0, -3.0]), ref, tol=0.05, tie_tol=0.05)  # not a candidate
    assert not unknown["ok"] and unknown["tie_rule"] is None
    lower = e2e.divergence(run([5, 4, 7], [-1.0, -2.0, -3.0]), ref, tol=0.05, tie_tol=0.05)  # b rates it 0.5 lower
    assert not lower["ok"]


def test_divergence_tie_seen_from_either_side_or_crowded():
    # three tokens with one bf16 logit: each run lists two of them and picks a different one
    ref = run([1, 3924], [-1.0, -6.8693], [[[-1.0, 1]], [[-6.8693, 5985], [-6.8693, 3924]]])
    mine = run([1, 260], [-1.0, -6.8693], [[[-1.0, 1]], [[-6.8693, 3924], [-6.8693, 260]]])
    d = e2e.divergence(mine, ref, tol=0.05, tie_tol=0.05)
    assert d["ok"] and d["tie_rule"] == "a"
    mine_no_top = run([1, 260], [-1.0, -6.8693])
    d = e2e.divergence(mine_no_top, ref, tol=0.05, tie_tol=0.05)
    assert d["ok"] and d["tie_rule"] == "crowded"
    d = e2e.divergence(run([1, 260], [-1.0, -7.5]), ref, tol=0.05, tie_tol=0.05)
    assert not d["ok"]


def test_workload_mix_is_bounded_and_reproducible():
    a = load.workload(256, 16384, 0, 8192)
    assert a == load.workload(256, 16384, 0, 8192)
    lens = [len(p) for p, _ in a]
    assert max(lens) == 16384 - 80 and min(lens) >= 1
    assert all(len(p) + n <= 16384 for p, n in a)
    assert sum(x <= 512 for x in lens) > 128 and sum(x > 4096 for x in lens) >= 2
    assert all(3 <= t < 8192 for p, _ in a for t in p)


class FakeSGLang(BaseHTTPRequestHandler):
    """Greedy 'model': token k+1 follows token k; logprobs depend only on the prompt."""

    streams_closed = 0
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    @staticmethod
    def answer(prompt, n):
        toks = [(prompt[-1] + 1 + i) % 8192 for i in range(n)]
        return {"meta_info": {"output_token_logprobs": [[-0.5, t, None] for t in toks],
                              "output_top_logprobs": [[[-0.5, t, None], [-2.0, t + 1, None]] for t in toks]}}

    def do_GET(self):
        body = b"" if self.path == "/health" else b"{}"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        n = req["sampling_params"]["max_new_tokens"]
        ids = req["input_ids"]
        if req.get("stream"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for i in range(n):
                    chunk = f"data: {json.dumps({'i': i})}\n\n".encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                    time.sleep(0.01)
            except (BrokenPipeError, ConnectionResetError):
                type(self).streams_closed += 1
            return
        res = [self.answer(p, n) for p in ids] if ids and isinstance(ids[0], list) else self.answer(ids, n)
        body = json.dumps(res).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def fake_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeSGLang)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()


def test_load_client_against_fake_server(fake_server):
    port = fake_server
    reqs = load.workload(40, 4096, 1, 8192)
    refs = {i: load.one(port, p, n, 30) for i, (p, n) in enumerate(reqs)}
    order = list(range(len(reqs)))[::-1]
    answers, errors = load.run_all(port, reqs, order, 8, 30)
    args = SimpleNamespace(logprob_tol=0.05, tie_tol=0.05)
    r = load.check(answers, errors, order, reqs, refs, args)
    assert r["ok"] and r["identical"] == 40 and r["mismatches"] == 0

    # a wrong answer is caught, a missing one too
    bad = dict(answers)
    bad[3] = dict(bad[3], tokens=[t + 7 for t in bad[3]["tokens"]],
                  top=[[[lp, t + 7] for lp, t in step] for step in bad[3]["top"]])
    del bad[4]
    r = load.check(bad, {}, order, reqs, refs, args)
    assert not r["ok"] and r["mismatches"] == 1 and r["answered"] == 39

    assert load.drop_streams(port, [[5, 6], [7]], chunks=3) == 2
    assert load.health(port)


def test_e2e_report_counts_near_ties(capsys):
    base = {"backend": "flashinfer", "page_size": 1, "startup_s": 1.0,
            "correctness": [run([5, 6], [-1.0, -2.0], [[[-1.0, 5], [-3.0, 2]], [[-2.0, 6], [-2.01, 8]]])]}
    other = {"backend": "etap", "page_size": 1, "startup_s": 1.0, "correctness": [run([5, 8], [-1.0, -2.01])]}
    args = SimpleNamespace(baseline="flashinfer", logprob_tol=0.05, tie_tol=0.05)
    assert e2e.report({"backends": {"flashinfer": base, "etap": other}}, args)
    assert other["comparison"]["near_ties"] == 1
    assert "ok" in capsys.readouterr().out


def test_wheelhouse_batches_balanced_with_first_wheel_in_batch_one(tmp_path):
    import build_sglang_wheelhouse as wh

    src = tmp_path / "src"
    src.mkdir()
    sizes = [36, 14, 14, 11, 9, 8, 6, 6, 5, 4, 3, 3, 2, 2, 1, 1, 1, 1]  # KiB, like the real mix in MiB
    wheels = []
    for i, kib in enumerate(sizes):
        w = src / f"pkg{i}-1.0-py3-none-any.whl"
        w.write_bytes(b"x" * kib * 1024)
        wheels.append(w)
    cutlass = src / "nvidia_cutlass-4.2.0.0-py3-none-any.whl"
    cutlass.write_bytes(b"c" * 6 * 1024)
    out = wh.split_batches(wheels + [cutlass], tmp_path / "dest", 60 * 1024, [cutlass])
    assert len(out) == 3  # ceil(139 / 60)
    assert cutlass.name in out[0]["wheels"]
    assert sorted(w for b in out for w in b["wheels"]) == sorted(w.name for w in wheels + [cutlass])
    kib = [b["mib"] * 1024 for b in out]
    assert max(kib) <= 60 and max(kib) - min(kib) <= 10  # balanced, each leaves room for the tree


def test_fa3_pack_and_unpack_round_trip(tmp_path):
    import zipfile

    import build_sglang_wheelhouse as wh
    import unpack_fa3

    import random

    payload = random.Random(0).randbytes(100_000) + b"tail"  # incompressible: several 16 KiB parts
    wheel = tmp_path / "sglang_kernel-0.4.6-cp310-abi3-manylinux2014_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("sgl_kernel/flash_ops.abi3.so", payload)
    info = wh.pack_fa3(wheel, tmp_path / "dest", part_bytes=2**20 // 64)
    assert len(info["parts"]) >= 2 and info["bytes"] == len(payload)
    site = tmp_path / "site"
    (site / "sgl_kernel").mkdir(parents=True)
    assert unpack_fa3.main([str(tmp_path / "dest" / "fa3"), "--site-dir", str(site)]) == 0
    assert (site / "sgl_kernel" / "flash_ops.abi3.so").read_bytes() == payload
    (tmp_path / "dest" / "fa3" / info["parts"][-1]).unlink()  # a lost transfer is refused
    assert unpack_fa3.main([str(tmp_path / "dest" / "fa3"), "--site-dir", str(site)]) == 1
