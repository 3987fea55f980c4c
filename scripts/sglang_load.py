#!/usr/bin/env python3
"""Server under load: an ETAP SGLang server takes a burst of concurrent mixed-length requests.

Uses the model and launcher of ``scripts/sglang_e2e.py`` (same flags: ``--tp``, ``--layers``, ...).
On 127.0.0.1, bounded in count and time:

1. ``--requests`` greedy requests (default 256) with mixed prompt lengths (mostly short, some
   long, one close to the context limit) and output lengths, each sent **alone**, one after the
   other: the reference answers (tokens, logprobs, the best candidates per step);
2. the same requests as a **burst**, ``--concurrency`` (default 64) in flight at a time, in a
   shuffled order: every one must be answered with the requested number of tokens, and agree
   with its reference: identical tokens, or a first difference that is a near tie (both tokens
   within ``--tie-tol`` in logprob, ``sglang_e2e.tie_rule``; the batch shapes differ, so
   bf16 rounding in the dense layers and the split-KV schedule differs) with logprobs on the
   common prefix within ``--logprob-tol``;
3. **client disconnects**: ``--disconnects`` streaming requests (long outputs) are opened, read
   for a few chunks and dropped mid-stream, while a second burst runs; afterwards the server
   must answer ``/health`` and a fresh set of requests, again matching the references.

Writes ``$OUT/sglang_load.json`` (or ``--out``) and prints a summary table; exit status 0 when
every request was answered and matched, the server kept serving, and its log holds no traceback.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sglang_e2e as e2e  # noqa: E402  (model, launcher, HTTP helpers, greedy comparison)


def workload(n: int, context_length: int, seed: int, vocab: int):
    """n (prompt, max_new_tokens) pairs: 70 % short, 25 % medium, 5 % long, one near the limit."""
    rng = random.Random(seed)
    reqs = []
    for i in range(n):
        u = rng.random()
        if i == 0:
            plen = context_length - 80  # one request at the context limit, as in a skewed mix
        elif u < 0.70:
            plen = rng.randint(1, 512)
        elif u < 0.95:
            plen = rng.randint(513, 4096)
        else:
            plen = rng.randint(4097, max(4098, context_length // 2))
        out = rng.randint(4, 64)
        reqs.append(([rng.randrange(3, vocab) for _ in range(plen)], out))
    return reqs


def one(port, prompt, max_new, timeout):
    res = e2e.generate(port, prompt, max_new, logprobs=True, timeout=timeout)
    return e2e.greedy_record(res)


def run_all(port, reqs, order, concurrency, timeout):
    answers, errors = {}, {}

    def task(i):
        try:
            answers[i] = one(port, reqs[i][0], reqs[i][1], timeout)
        except Exception as exc:  # noqa: BLE001 - every failure is reported
            errors[i] = f"{type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(task, order))
    return answers, errors


def check(answers, errors, expected, reqs, refs, args):
    """Every index in ``expected`` answered with its length and agreeing with its reference."""
    rows = {"answered": len(answers), "expected": len(expected), "errors": len(errors), "wrong_length": 0, "identical": 0,
            "near_ties": 0, "mismatches": 0, "max_abs_logprob_diff": 0.0, "divergent": []}
    for i, a in answers.items():
        if len(a["tokens"]) != reqs[i][1]:
            rows["wrong_length"] += 1
            continue
        d = e2e.divergence(a, refs[i], args.logprob_tol, args.tie_tol)
        rows["max_abs_logprob_diff"] = max(rows["max_abs_logprob_diff"], d["max_abs_logprob_diff"])
        if d["first_divergence"] is None and d["ok"]:
            rows["identical"] += 1
            continue
        if d["ok"]:
            rows["near_ties"] += 1
        else:
            rows["mismatches"] += 1
        # both runs in full, so that any verdict can be re-checked from the results file
        rows["divergent"].append({"request": i, "prompt_len": len(reqs[i][0]), **d, "answer": a, "reference": refs[i]})
    rows["errors_detail"] = dict(list(errors.items())[:5])
    rows["ok"] = (set(answers) == set(expected) and not errors and not rows["wrong_length"]
                  and not rows["mismatches"])
    return rows


def drop_streams(port, prompts, chunks=3, timeout=120):
    """Open streaming requests, read a few chunks of each, then close the sockets mid-stream."""
    dropped = 0
    conns = []
    for prompt in prompts:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        body = json.dumps({"input_ids": prompt, "stream": True,
                           "sampling_params": {"temperature": 0.0, "max_new_tokens": 2000, "ignore_eos": True}})
        c.request("POST", "/generate", body=body, headers={"Content-Type": "application/json"})
        conns.append((c, c.getresponse()))
    for c, r in conns:
        got = 0
        while got < chunks:
            line = r.readline()
            if not line:
                break
            if line.startswith(b"data:"):
                got += 1
        r.close()  # the client goes away without reading the rest
        c.close()
        dropped += got >= chunks
    return dropped


def health(port) -> bool:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", "/health")
        ok = c.getresponse().status == 200
        c.close()
        return ok
    except OSError:
        return False


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="etap", help="name[:page_size]")
    p.add_argument("--requests", type=int, default=256)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--disconnects", type=int, default=8)
    e2e.add_model_server_args(p, context_length=16384)
    p.add_argument("--logprob-tol", type=float, default=0.05)
    p.add_argument("--tie-tol", type=float, default=0.05)
    p.add_argument("--request-timeout", type=float, default=300)
    p.add_argument("--log-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    args.batch_sizes = [args.concurrency]  # sizes the server's CUDA graphs and running-request cap

    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path.cwd()
    out = args.out or out_dir / "sglang_load.json"
    log_dir = args.log_dir or out_dir / "sglang_load_logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    model_dir = args.model_dir or Path("/tmp") / f"etap_e2e_dsv3_tp{args.tp}"
    e2e.make_model(model_dir, args)

    name, _, ps = args.backend.partition(":")
    page_size = int(ps) if ps else args.page_size
    port = e2e.free_port()
    cmd = e2e.server_cmd(args, name, page_size, port, model_dir)
    log_path = log_dir / f"server_{name}_{page_size}.log"
    reqs = workload(args.requests, args.context_length, args.seed, args.vocab)
    result = {"backend": name, "page_size": page_size, "tp": args.tp, "cmd": " ".join(cmd),
              "requests": len(reqs), "concurrency": args.concurrency,
              "prompt_tokens": sum(len(r[0]) for r in reqs), "output_tokens": sum(r[1] for r in reqs),
              "prompt_len_max": max(len(r[0]) for r in reqs), "command": " ".join(sys.argv)}
    # ETAP's kernel switches the servers inherit (scripts/device_session.sh sets them)
    result["etap_env"] = {k: v for k, v in os.environ.items() if k.startswith("ETAP_")}
    try:
        import torch

        result["device"] = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001
        pass
    t_start = time.time()
    ok = False
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=e2e.child_env(), start_new_session=True)
        try:
            e2e.wait_ready(proc, port, time.time() + args.startup_timeout)
            result["startup_s"] = round(time.time() - t_start, 1)

            t0 = time.time()
            refs = {}
            for i, (prompt, n) in enumerate(reqs):
                refs[i] = one(port, prompt, n, args.request_timeout)
            result["sequential_s"] = round(time.time() - t0, 2)

            order = list(range(len(reqs)))
            random.Random(args.seed + 7).shuffle(order)
            t0 = time.time()
            answers, errors = run_all(port, reqs, order, args.concurrency, args.request_timeout)
            result["burst_s"] = round(time.time() - t0, 2)
            result["burst"] = check(answers, errors, order, reqs, refs, args)

            # client disconnects mid-stream while a second burst (the first 64 requests) runs
            rng = random.Random(args.seed + 9)
            stream_prompts = [[rng.randrange(3, args.vocab) for _ in range(rng.randint(16, 2000))]
                              for _ in range(args.disconnects)]
            sub = order[: args.concurrency]
            with ThreadPoolExecutor(max_workers=1) as side:
                fut = side.submit(run_all, port, reqs, sub, args.concurrency, args.request_timeout)
                result["streams_dropped"] = drop_streams(port, stream_prompts)
                answers2, errors2 = fut.result()
            result["during_disconnects"] = check(answers2, errors2, sub, reqs, refs, args)

            time.sleep(2)  # let the server notice the closed sockets and abort those requests
            result["health_after"] = health(port)
            after = order[-16:]
            answers3, errors3 = run_all(port, reqs, after, 16, args.request_timeout)
            result["after_disconnects"] = check(answers3, errors3, after, reqs, refs, args)
            result["server_alive"] = proc.poll() is None
            ok = (result["burst"]["ok"] and result["during_disconnects"]["ok"] and result["after_disconnects"]["ok"]
                  and result["health_after"] and result["server_alive"]
                  and result["streams_dropped"] == args.disconnects)
        except Exception as exc:  # noqa: BLE001
            result["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            e2e.stop(proc)
    text = log_path.read_text(errors="replace")
    result["log_tracebacks"] = text.count("Traceback (most recent call last)")
    if result.get("error") or result["log_tracebacks"]:
        result["log_tail"] = text[-4000:]
    result["ok"] = ok and result["log_tracebacks"] == 0
    result["total_s"] = round(time.time() - t_start, 1)
    out.write_text(json.dumps(result, indent=1))

    print(f"\n== server under load: {name} page {page_size}, TP {args.tp}, {len(reqs)} requests "
          f"({result['prompt_tokens']} prompt / {result['output_tokens']} output tokens, longest prompt "
          f"{result['prompt_len_max']})")
    print(f"{'phase':24s} {'answered':>9s} {'errors':>7s} {'identical':>10s} {'near ties':>10s} {'mismatch':>9s} {'max|dlogp|':>11s}")
    for phase in ("burst", "during_disconnects", "after_disconnects"):
        r = result.get(phase)
        if r:
            of = r["expected"]
            print(f"{phase:24s} {r['answered']:>4d}/{of:<4d} {r['errors']:7d} {r['identical']:10d} {r['near_ties']:10d} "
                  f"{r['mismatches']:9d} {r['max_abs_logprob_diff']:11.2e}")
    for k in ("startup_s", "sequential_s", "burst_s", "streams_dropped", "health_after", "server_alive",
              "log_tracebacks", "error"):
        if k in result:
            print(f"  {k}: {result[k]}")
    print(f"{'PASS' if result['ok'] else 'FAIL'}; results: {out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
