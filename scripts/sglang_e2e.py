#!/usr/bin/env python3
"""End-to-end check of ``--attention-backend etap`` in SGLang 0.5.10.post1 (run on a GPU box).

For each backend spec (``name`` or ``name:page_size``; default ``etap,etap:64,flashmla,flashinfer``):

1. writes (once) a small DeepSeek-V3-architecture model into ``--model-dir`` (default: a temp
   dir): kv_lora_rank 512, qk_rope_head_dim 64, qk_nope_head_dim 128, v_head_dim 128,
   ``16 * TP`` heads, ``--layers`` layers of dense MLP (``--moe`` for a tiny MoE), a small
   vocabulary, random weights (std 0.02, via transformers) saved as safetensors, and a local
   word-level tokenizer (``tokenizers``), so nothing is downloaded;
2. launches ``python -m sglang.launch_server`` (or, for an unpatched SGLang, ETAP's
   ``etap_integration.sglang_etap.launch_server``) on 127.0.0.1 with that backend, ``--tp N``,
   CUDA graphs on, radix cache off; waits (bounded) until it serves;
3. sends the same greedy prompts (token ids, lengths spread over several pages) and records the
   generated tokens and their logprobs (the first token comes from prefill, which every backend
   here runs on FlashInfer MLA; the following ones from decode);
4. measures decode throughput per batch size: ``bs * (out - 1) / (T(out) - T(1))`` from the
   server, the median of 5 repeats, and optionally ``sglang.bench_one_batch`` (``--bench-one-batch``);
5. kills the server (its whole process group) and moves on.

Then it compares every backend with the baseline (``--baseline``, default flashinfer): identical
greedy tokens, first divergence, max |logprob difference| on the common prefix; prints a table and
writes JSON (``--out``, default ``$OUT/sglang_e2e.json`` when ``OUT`` is set, plus a cumulative
copy in ``/tmp/etap_sglang_e2e_<out name>.json``). Results of earlier runs with the same ``--out`` name are kept, so
``--backends`` can be split over several calls on the same machine; ``--report`` only re-prints.
Exit status: 0 when every backend served, matched the baseline within ``--logprob-tol`` on the
tokens before the first divergence, and every divergence is a near tie (``tie_rule``: the two
tokens score within ``--tie-tol`` of each other; random weights give near-uniform bf16 logits,
where rounding flips such ties); 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BACKENDS = "etap,etap:64,flashmla,flashinfer"
TOP_K = 5  # candidates recorded per greedy step (near-tie evidence)


# --------------------------------------------------------------------------- model

def model_config(args) -> dict:
    heads = 16 * args.tp
    layers = args.layers
    return {
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "vocab_size": args.vocab,
        "hidden_size": args.hidden,
        "intermediate_size": 2 * args.hidden,
        "moe_intermediate_size": args.hidden // 2,
        "num_hidden_layers": layers,
        "num_nextn_predict_layers": 0,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "n_shared_experts": 1,
        "n_routed_experts": 8,
        "num_experts_per_tok": 2,
        "n_group": 1,
        "topk_group": 1,
        "routed_scaling_factor": 1.0,
        "scoring_func": "sigmoid",
        "topk_method": "noaux_tc",
        "norm_topk_prob": True,
        "first_k_dense_replace": 1 if args.moe else layers,
        "moe_layer_freq": 1,
        "q_lora_rank": 384,
        "kv_lora_rank": 512,
        "qk_rope_head_dim": 64,
        "qk_nope_head_dim": 128,
        "v_head_dim": 128,
        "hidden_act": "silu",
        "max_position_embeddings": args.context_length,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "rms_norm_eps": 1e-6,
        "initializer_range": 0.02,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "torch_dtype": "bfloat16",
        "use_cache": True,
    }


def write_tokenizer(model_dir: Path, vocab: int, context_length: int) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for i in range(3, vocab):
        words[f"w{i}"] = i
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(model_dir / "tokenizer.json"))
    (model_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "pad_token": "<unk>", "model_max_length": context_length,
        "add_bos_token": False, "add_eos_token": False,
    }, indent=1))
    (model_dir / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"}))


def make_model(model_dir: Path, args) -> None:
    marker = model_dir / ".etap_e2e.json"
    cfg = model_config(args)
    want = {"config": cfg, "dummy": args.dummy_weights, "seed": args.seed}
    if marker.exists() and json.loads(marker.read_text()) == want:
        return
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps(cfg, indent=1))
    write_tokenizer(model_dir, args.vocab, args.context_length)
    if not args.dummy_weights:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        torch.manual_seed(args.seed)
        hf_cfg = AutoConfig.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_config(hf_cfg, torch_dtype=torch.bfloat16)
        model.save_pretrained(model_dir, safe_serialization=True)
        (model_dir / "config.json").write_text(json.dumps(cfg, indent=1))  # keep ours verbatim
    marker.write_text(json.dumps(want))


# --------------------------------------------------------------------------- server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sglang_is_patched() -> bool:
    import importlib.util

    spec = importlib.util.find_spec("sglang")
    if spec is None or not spec.submodule_search_locations:
        return False
    path = Path(list(spec.submodule_search_locations)[0]) / "srt" / "server_args.py"
    return path.is_file() and '"etap",' in path.read_text()


def launcher_module(args) -> str:
    if args.launcher == "patched" or (args.launcher == "auto" and sglang_is_patched()):
        return "sglang.launch_server"
    return "etap_integration.sglang_etap.launch_server"


def child_env() -> dict:
    env = dict(os.environ)
    shim = Path(tempfile.gettempdir()) / "etap_e2e_shim"
    pkg = shim / "etap_integration"
    if not (pkg.is_symlink() and Path(os.readlink(pkg)) == REPO / "integration"):
        # make etap_integration importable from a plain checkout (an installed copy wins if the
        # package is installed: it comes first on sys.path only through this shim otherwise)
        pkg.parent.mkdir(parents=True, exist_ok=True)
        if pkg.is_symlink() or pkg.exists():
            pkg.unlink()
        os.symlink(REPO / "integration", pkg)
    paths = [str(shim), str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    for k, v in (("NCCL_NVLS_ENABLE", "0"), ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1"), ("NVSHMEM_DISABLE_NVLS", "1")):
        env.setdefault(k, v)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def server_cmd(args, name: str, page_size: int, port: int, model_dir: Path) -> list:
    cmd = [sys.executable, "-m", launcher_module(args),
           "--model-path", str(model_dir), "--attention-backend", name, "--tp", str(args.tp),
           "--host", "127.0.0.1", "--port", str(port), "--page-size", str(page_size),
           "--context-length", str(args.context_length), "--mem-fraction-static", str(args.mem_fraction),
           "--cuda-graph-max-bs", str(max(args.batch_sizes)), "--max-running-requests", str(max(args.batch_sizes)),
           "--disable-radix-cache", "--random-seed", str(args.seed), "--skip-server-warmup",
           "--log-level", "info"]
    if args.dummy_weights:
        cmd += ["--load-format", "dummy"]
    if not args.piecewise_cuda_graph:
        cmd += ["--disable-piecewise-cuda-graph"]
    for extra in args.server_arg:
        cmd += extra.split()
    return cmd


def http(port: int, path: str, payload=None, timeout: float = 600):
    url = f"http://127.0.0.1:{port}{path}"
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read()
    return json.loads(body) if body else None


def wait_ready(proc, port: int, deadline: float) -> None:
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} during start-up")
        try:
            http(port, "/model_info", timeout=5)
            http(port, "/generate", {"input_ids": [5, 6, 7], "sampling_params": {"max_new_tokens": 2}}, timeout=120)
            return
        except (urllib.error.URLError, ConnectionError, OSError, TimeoutError):
            time.sleep(2)
    raise TimeoutError("server did not come up in time")


def stop(proc) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group (start_new_session)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)


# --------------------------------------------------------------------------- workloads

def prompts(args):
    rng = random.Random(args.seed)
    lens = [7, 64, 65, 200, 513, 1500][: args.num_prompts] + [rng.randint(8, 900) for _ in range(max(0, args.num_prompts - 6))]
    return [[rng.randrange(3, args.vocab) for _ in range(n)] for n in lens]


def generate(port, batch, max_new_tokens, logprobs=False, timeout: float = 600):
    payload = {"input_ids": batch,
               "sampling_params": {"temperature": 0.0, "max_new_tokens": max_new_tokens, "ignore_eos": True}}
    if logprobs:  # the chosen token's logprob and the best TOP_K candidates at every step
        payload.update({"return_logprob": True, "logprob_start_len": -1, "top_logprobs_num": TOP_K})
    return http(port, "/generate", payload, timeout=timeout)


def greedy_record(res) -> dict:
    """tokens, their logprobs and the TOP_K best (logprob, token) candidates of one /generate answer."""
    meta = res["meta_info"]
    toks = meta["output_token_logprobs"]
    top = meta.get("output_top_logprobs") or [[] for _ in toks]
    return {"tokens": [t[1] for t in toks], "logprobs": [t[0] for t in toks],
            "top": [[[c[0], c[1]] for c in (step or [])[:TOP_K]] for step in top]}


def correctness(port, args):
    return [greedy_record(res) for res in generate(port, prompts(args), args.check_tokens, logprobs=True)]


def tie_rule(a: dict, b: dict, div: int, tie_tol: float):
    """Why the first differing token (step ``div``) is a near tie, or None if it is not one.

    ``b``: the first (top-k candidates within ``tie_tol`` of b's choice include a's token);
    ``a``: the symmetric case (a's candidates include b's token);
    ``crowded``: b's k recorded candidates are all within ``tie_tol`` of its choice (more tokens
    may tie than were recorded) and a's choice scores within ``tie_tol`` of b's. Random weights give
    near-uniform bf16 logits, where exact ties among three or more tokens happen.
    """
    def within(x, y):
        return x is not None and y is not None and abs(x - y) <= tie_tol

    ta, tb = a["tokens"][div], b["tokens"][div]
    la, lb = a["logprobs"][div], b["logprobs"][div]
    def candidates(run):  # "top2": results recorded before TOP_K was raised from 2
        steps = run.get("top", run.get("top2", []))
        return steps[div] if div < len(steps) else []

    top_a, top_b = candidates(a), candidates(b)
    if any(tok == ta and within(lp, lb) for lp, tok in top_b):
        return "b"
    if any(tok == tb and within(lp, la) for lp, tok in top_a):
        return "a"
    if len(top_b) >= 2 and all(within(lp, lb) for lp, _ in top_b) and within(la, lb):
        return "crowded"
    return None


def divergence(a: dict, b: dict, tol: float, tie_tol: float) -> dict:
    """Compare two greedy runs of one prompt (b is the reference).

    Past the first differing token the contexts differ, so only the common prefix is compared.
    A divergence is accepted only as a *near tie* (see ``tie_rule``): under bf16 rounding either
    token could win.
    """
    n = min(len(a["tokens"]), len(b["tokens"]))
    div = next((i for i in range(n) if a["tokens"][i] != b["tokens"][i]), None)
    upto = n if div is None else div
    diffs = [abs(x - y) for x, y in zip(a["logprobs"][:upto], b["logprobs"][:upto]) if x is not None and y is not None]
    rule = None if div is None else tie_rule(a, b, div, tie_tol)
    gap = None
    if div is not None and a["logprobs"][div] is not None and b["logprobs"][div] is not None:
        gap = b["logprobs"][div] - a["logprobs"][div]
    worst = max(diffs) if diffs else 0.0
    return {"first_divergence": div, "max_abs_logprob_diff": worst,
            "first_token_logprob_diff": diffs[0] if diffs else 0.0,
            "gap_at_divergence": gap, "near_tie": rule is not None, "tie_rule": rule,
            "ok": worst <= tol and (div is None or rule is not None)}


def throughput(port, args, repeats: int = 5):
    """Decode time per step: T(out tokens) - T(1 token) for the same batch, median of ``repeats``."""
    rng = random.Random(args.seed + 1)
    rows = []
    for bs in args.batch_sizes:
        batch = [[rng.randrange(3, args.vocab) for _ in range(args.input_len)] for _ in range(bs)]
        generate(port, batch, 4)  # warm-up
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter(); generate(port, batch, 1); t1 = time.perf_counter()
            generate(port, batch, args.output_len); t2 = time.perf_counter()
            samples.append(((t2 - t1) - (t1 - t0), t1 - t0, t2 - t1))
        samples.sort()
        decode_s, prefill_s, total_s = samples[len(samples) // 2]
        steps = args.output_len - 1
        rows.append({"batch_size": bs, "input_len": args.input_len, "output_len": args.output_len,
                     "prefill_s": prefill_s, "total_s": total_s, "repeats": repeats,
                     "decode_ms_per_step_samples": [round(1e3 * d / steps, 4) for d, _, _ in samples],
                     "decode_ms_per_step": 1e3 * decode_s / steps if decode_s > 0 else None,
                     "decode_tok_per_s": bs * steps / decode_s if decode_s > 0 else None})
    return rows


def bench_one_batch(args, name, page_size, model_dir, log_dir):
    result = log_dir / f"bench_{name}_{page_size}.jsonl"
    result.unlink(missing_ok=True)
    module = ("sglang.bench_one_batch" if launcher_module(args) == "sglang.launch_server"
              else "etap_integration.sglang_etap.bench_one_batch")
    cmd = [sys.executable, "-m", module, "--model-path", str(model_dir), "--attention-backend", name,
           "--tp", str(args.tp), "--page-size", str(page_size), "--context-length", str(args.context_length),
           "--mem-fraction-static", str(args.mem_fraction), "--batch-size", *map(str, args.batch_sizes),
           "--input-len", str(args.input_len), "--output-len", str(args.output_len),
           "--result-filename", str(result), "--run-name", f"{name}:{page_size}"]
    if args.dummy_weights:
        cmd += ["--load-format", "dummy"]
    with open(log_dir / f"bench_{name}_{page_size}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env(), start_new_session=True)
        try:
            proc.wait(timeout=args.bench_timeout)
        except subprocess.TimeoutExpired:
            stop(proc)
            return {"error": "timeout"}
    if not result.exists():
        return {"error": f"exit {proc.returncode}, no results (see {log.name})"}
    rows = [json.loads(l) for l in result.read_text().splitlines() if l.strip()]
    return [{k: r.get(k) for k in ("batch_size", "input_len", "output_len", "prefill_latency",
                                   "median_decode_latency", "median_decode_throughput")} for r in rows]


def run_backend(spec, args, model_dir, log_dir):
    name, _, ps = spec.partition(":")
    page_size = int(ps) if ps else {"flashmla": 64, "cutlass_mla": 128}.get(name, args.page_size)
    port = free_port()
    log_path = log_dir / f"server_{name}_{page_size}.log"
    entry = {"backend": name, "page_size": page_size, "log": str(log_path)}
    cmd = server_cmd(args, name, page_size, port, model_dir)
    entry["cmd"] = " ".join(cmd)
    t0 = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env(), start_new_session=True)
        try:
            wait_ready(proc, port, t0 + args.startup_timeout)
            entry["startup_s"] = round(time.time() - t0, 1)
            entry["correctness"] = correctness(port, args)
            entry["throughput"] = throughput(port, args)
        except Exception as exc:  # noqa: BLE001 - record and go on with the next backend
            entry["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            stop(proc)
    if "error" in entry:
        entry["log_tail"] = log_path.read_text(errors="replace")[-3000:]
    if args.bench_one_batch and "error" not in entry:
        entry["bench_one_batch"] = bench_one_batch(args, name, page_size, model_dir, log_dir)
    return entry


# --------------------------------------------------------------------------- report

def compare(entry, base, tol, tie_tol):
    rows = [divergence(a, b, tol, tie_tol) for a, b in zip(entry["correctness"], base["correctness"])]
    return {"prompts": len(rows), "identical": sum(r["first_divergence"] is None for r in rows),
            "near_ties": sum(r["near_tie"] for r in rows),
            "max_abs_logprob_diff": max((r["max_abs_logprob_diff"] for r in rows), default=0.0),
            "first_token_max_diff": max((r["first_token_logprob_diff"] for r in rows), default=0.0),
            "ok": all(r["ok"] for r in rows), "per_prompt": rows}


def report(results, args) -> bool:
    entries = results.get("backends", {})
    base = next((e for k, e in entries.items() if e["backend"] == args.baseline and "correctness" in e), None)
    ok = True
    print("\n== correctness vs baseline", args.baseline if base else "(baseline missing)")
    print(f"{'backend':16s} {'page':>5s} {'start s':>8s} {'same tokens':>12s} {'near ties':>9s} {'max|dlogp|':>11s} {'1st tok':>9s}  status")
    for key, e in entries.items():
        if "error" in e:
            ok = False
            print(f"{key:16s} {e['page_size']:5d} {'-':>8s} {'-':>12s} {'-':>11s} {'-':>9s}  ERROR {e['error']}")
            continue
        if base is None or e is base:
            print(f"{key:16s} {e['page_size']:5d} {e['startup_s']:8.1f} {'(baseline)' if e is base else '-':>12s}")
            continue
        c = e["comparison"] = compare(e, base, args.logprob_tol, args.tie_tol)
        ok &= c["ok"]
        print(f"{key:16s} {e['page_size']:5d} {e['startup_s']:8.1f} {c['identical']:5d}/{c['prompts']:<6d} "
              f"{c['near_ties']:9d} {c['max_abs_logprob_diff']:11.2e} {c['first_token_max_diff']:9.2e}  {'ok' if c['ok'] else 'MISMATCH'}")
    print("\n== decode throughput (server: bs*(out-1)/(T(out)-T(1)))")
    bss = sorted({r["batch_size"] for e in entries.values() for r in e.get("throughput", [])})
    print(f"{'backend':16s} " + " ".join(f"{'bs=' + str(b):>14s}" for b in bss) + "   (tok/s | ms/step)")
    for key, e in entries.items():
        cells = {r["batch_size"]: r for r in e.get("throughput", [])}
        line = []
        for b in bss:
            r = cells.get(b)
            line.append(f"{r['decode_tok_per_s']:7.0f}|{r['decode_ms_per_step']:5.2f}" if r and r["decode_tok_per_s"] else f"{'-':>14s}")
        print(f"{key:16s} " + " ".join(f"{c:>14s}" for c in line))
    if any("bench_one_batch" in e for e in entries.values()):
        print("\n== sglang.bench_one_batch (median decode latency s / throughput tok/s)")
        for key, e in entries.items():
            rows = e.get("bench_one_batch")
            if isinstance(rows, list):
                cells = "  ".join(f"bs={r['batch_size']}: {r['median_decode_latency']:.5f}s {r['median_decode_throughput']:.0f}" for r in rows)
                print(f"{key:16s} {cells}")
            elif rows:
                print(f"{key:16s} {rows}")
    return ok


def add_model_server_args(p: argparse.ArgumentParser, context_length: int) -> None:
    """The model this script writes and how its servers start (shared with sglang_load.py)."""
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--moe", action="store_true", help="layers after the first are tiny MoE (8 experts, top-2)")
    p.add_argument("--dummy-weights", action="store_true", help="use --load-format dummy (tiny weights, weak check)")
    p.add_argument("--context-length", type=int, default=context_length)
    p.add_argument("--page-size", type=int, default=1, help="page size for specs without one (flashmla: 64)")
    p.add_argument("--mem-fraction", type=float, default=0.6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--startup-timeout", type=float, default=420)
    p.add_argument("--piecewise-cuda-graph", action="store_true", help="keep SGLang's piecewise (prefill) CUDA graph")
    p.add_argument("--launcher", choices=["auto", "patched", "register"], default="auto",
                   help="patched: python -m sglang.launch_server; register: ETAP's wrapper for unpatched sglang")
    p.add_argument("--server-arg", action="append", default=[], help="extra server arguments (repeatable)")
    p.add_argument("--model-dir", type=Path, default=None)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default=DEFAULT_BACKENDS, help="comma list of name[:page_size] (default %(default)s)")
    p.add_argument("--baseline", default="flashinfer")
    add_model_server_args(p, context_length=8192)
    p.add_argument("--num-prompts", type=int, default=12)
    p.add_argument("--check-tokens", type=int, default=24, help="greedy tokens compared per prompt")
    p.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    p.add_argument("--input-len", type=int, default=2048)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--logprob-tol", type=float, default=0.05)
    p.add_argument("--tie-tol", type=float, default=0.05,
                   help="a differing greedy token is accepted only as a near tie: both tokens within this logprob of each other")
    p.add_argument("--bench-one-batch", action="store_true", help="also run sglang.bench_one_batch per backend")
    p.add_argument("--bench-timeout", type=float, default=300)
    p.add_argument("--log-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--report", action="store_true", help="only re-print the results in --out")
    args = p.parse_args(argv)

    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path.cwd()
    out = args.out or out_dir / "sglang_e2e.json"
    # $OUT is emptied before every device call: keep the cumulative results beside it as well,
    # one file per --out name so that separate experiments (TP, KV dtype) do not mix
    state = Path(tempfile.gettempdir()) / f"etap_sglang_e2e_{out.stem}.json"
    src = out if out.exists() else state
    results = json.loads(src.read_text()) if src.exists() else {}
    if args.report:
        return 0 if report(results, args) else 1

    model_dir = args.model_dir or Path(tempfile.gettempdir()) / f"etap_e2e_dsv3_tp{args.tp}"
    log_dir = args.log_dir or out_dir / "sglang_e2e_logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    make_model(model_dir, args)
    print(f"model: {model_dir} ({time.time() - t0:.1f}s); launcher: {launcher_module(args)}", flush=True)
    results.setdefault("backends", {})
    results["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    # ETAP's kernel switches the servers inherit (scripts/device_session.sh sets them)
    results["etap_env"] = {k: v for k, v in os.environ.items() if k.startswith("ETAP_")}
    try:
        import torch

        results["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception:  # noqa: BLE001
        pass
    for spec in [s.strip() for s in args.backends.split(",") if s.strip()]:
        print(f"--- {spec}", flush=True)
        entry = run_backend(spec, args, model_dir, log_dir)
        results["backends"][spec] = entry
        out.write_text(json.dumps(results, indent=1))
        state.write_text(json.dumps(results, indent=1))
        print(f"    {'ERROR ' + entry['error'] if 'error' in entry else 'served in %.0fs' % entry['startup_s']}", flush=True)
    ok = report(results, args)
    out.write_text(json.dumps(results, indent=1))
    state.write_text(json.dumps(results, indent=1))
    print(f"\nresults: {out} (cumulative copy: {state})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
