"""CPU tests of the FlashInfer integration (no GPU, no flashinfer import).

* ``EtapMLABackend`` (integration/flashinfer_etap.py): plan-time validation, FlashInfer's
  shapes / base-2 LSE / in-place outputs / causal alignment, and CUDA-graph buffer handling, with
  the two ETAP kernels replaced by a float64 torch stand-in that follows the etap_kernels contract.
* ``patches/flashinfer-0.6.7.post3-etap.patch`` and ``scripts/apply_flashinfer_patch.py`` against
  the pinned wheel downloaded from PyPI (skipped when PyPI cannot be reached; set
  ``ETAP_FLASHINFER_WHEEL`` to a local copy of the wheel to run offline). The patched
  ``flashinfer/mla.py`` is also executed, with stubs for flashinfer's compiled parts, in a
  subprocess.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import py_compile
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
PINNED = "0.6.7.post3"
PATCH = ROOT / "patches" / f"flashinfer-{PINNED}-etap.patch"
SCRIPT = ROOT / "scripts" / "apply_flashinfer_patch.py"


def load_shim():
    """``etap_integration.flashinfer_etap``: installed, else straight from integration/."""
    try:
        return importlib.import_module("etap_integration.flashinfer_etap")
    except ImportError:
        pass
    spec = importlib.util.spec_from_file_location(
        "etap_integration", ROOT / "integration" / "__init__.py",
        submodule_search_locations=[str(ROOT / "integration")],
    )
    pkg = importlib.util.module_from_spec(spec)
    sys.modules["etap_integration"] = pkg
    spec.loader.exec_module(pkg)
    return importlib.import_module("etap_integration.flashinfer_etap")


fe = load_shim()


# ----------------------------------------------------------------------------- stand-ins

class FakeKernels:
    """The etap_kernels contract in float64 torch (CPU), recording how it was called."""

    def __init__(self):
        self.metadata_calls = 0
        self.decode_calls = []

    def get_mla_metadata(self, cache_seqlens, num_q_tokens_per_head_k, num_heads_k):
        assert cache_seqlens.dtype == torch.int32 and cache_seqlens.dim() == 1
        assert num_heads_k == 1
        self.metadata_calls += 1
        b = cache_seqlens.shape[0]
        meta = torch.zeros((4, 8), dtype=torch.int32, device=cache_seqlens.device)
        meta[:, 0] = cache_seqlens.sum()
        meta[:, 1] = num_q_tokens_per_head_k
        splits = torch.arange(b + 1, dtype=torch.int32, device=cache_seqlens.device)
        return meta, splits

    def mla_decode(self, q_nope, q_rope, ckv_cache, kpe_cache, cache_seqlens, meta, splits, *,
                   block_table=None, kv_indptr=None, kv_indices=None, softmax_scale=None,
                   causal=False, out=None, lse=None, validate_values=None):
        b, s_q, h, _ = q_nope.shape
        assert block_table is None and kv_indptr is not None and kv_indices is not None
        assert kv_indptr.dtype == kv_indices.dtype == cache_seqlens.dtype == torch.int32
        assert kv_indptr.shape == (b + 1,) and cache_seqlens.shape == (b,)
        assert kv_indices.is_contiguous() and kv_indptr.is_contiguous()
        assert meta.shape == (4, 8) and splits.shape == (b + 1,)
        assert out is None or (out.shape == (b, s_q, h, 512) and out.stride(-1) == 1)
        assert lse is None or (lse.shape == (b, h, s_q) and lse.dtype == torch.float32)
        self.decode_calls.append(dict(out=out, lse=lse, causal=causal, scale=softmax_scale,
                                      validate_values=validate_values))
        if out is None:
            out = torch.empty((b, s_q, h, 512), dtype=q_nope.dtype)
        if lse is None:
            lse = torch.empty((b, h, s_q), dtype=torch.float32)
        ps = ckv_cache.shape[1]
        for i in range(b):
            n = int(cache_seqlens[i])
            if n == 0:
                out[i] = 0
                lse[i] = float("-inf")
                continue
            pages = kv_indices[int(kv_indptr[i]):int(kv_indptr[i + 1])].long()
            tok = torch.arange(n)
            page, slot = pages[tok // ps], tok % ps
            v = ckv_cache[page, slot].double()
            k = torch.cat([v, kpe_cache[page, slot].double()], -1)
            q = torch.cat([q_nope[i], q_rope[i]], -1).double()  # [s_q, h, 576]
            s = torch.einsum("thd,ld->thl", q, k) * softmax_scale
            if causal:
                for t in range(s_q):  # ETAP/FlashMLA: token t sees kv < n - (s_q - 1 - t)
                    s[t, :, tok >= n - (s_q - 1 - t)] = float("-inf")
            m = torch.logsumexp(s, -1)  # [s_q, h]
            out[i] = torch.einsum("thl,ld->thd", torch.exp(s - m[..., None]), v).to(out.dtype)
            lse[i] = m.transpose(0, 1).float()
        return out, lse


def flashinfer_reference(qo_indptr, kv_indptr, kv_indices, kv_len, q_nope, q_pe, ckv, kpe,
                         sm_scale, causal, page_size):
    """FlashInfer MLA semantics written from its kernel: out [total_q, h, 512] (float64) and
    base-2 lse [total_q, h]; mask ``kv_idx + qo_len > kv_len + q_idx`` when causal."""
    total_q, h, _ = q_nope.shape
    out = torch.zeros((total_q, h, 512), dtype=torch.float64)
    lse = torch.full((total_q, h), float("-inf"), dtype=torch.float64)
    for i in range(len(qo_indptr) - 1):
        q0, q1 = int(qo_indptr[i]), int(qo_indptr[i + 1])
        qo_len, n = q1 - q0, int(kv_len[i])
        pages = kv_indices[int(kv_indptr[i]):int(kv_indptr[i + 1])].long()
        for q_idx in range(qo_len):
            keys = [j for j in range(n) if not (causal and j + qo_len > n + q_idx)]
            if not keys:
                continue
            j = torch.tensor(keys)
            rows_c = ckv[pages[j // page_size], j % page_size].double()
            rows_p = kpe[pages[j // page_size], j % page_size].double()
            logits = (q_nope[q0 + q_idx].double() @ rows_c.T + q_pe[q0 + q_idx].double() @ rows_p.T) * sm_scale
            m = torch.logsumexp(logits, -1)
            out[q0 + q_idx] = torch.softmax(logits, -1) @ rows_c
            lse[q0 + q_idx] = m / torch.log(torch.tensor(2.0, dtype=torch.float64))
    return out, lse


@pytest.fixture
def kernels(monkeypatch):
    fake = FakeKernels()
    monkeypatch.setattr(fe, "_kernels", lambda: (fake.get_mla_metadata, fake.mla_decode))
    return fake


def make_problem(lens, qo_len, h, page_size, dtype=torch.bfloat16, extra_pages=3, seed=0):
    """Inputs in FlashInfer's layout: caches are views of one [pages, page_size, 576] buffer and
    pages are handed out in a shuffled order."""
    g = torch.Generator().manual_seed(seed)
    b = len(lens)
    pages_per = [max(1, -(-n // page_size)) for n in lens]
    num_pages = sum(pages_per) + extra_pages
    buf = torch.randn((num_pages, page_size, 576), generator=g).to(dtype)
    perm = torch.randperm(num_pages, generator=g).to(torch.int32)
    kv_indptr = torch.tensor([0] + list(torch.tensor(pages_per).cumsum(0)), dtype=torch.int32)
    kv_indices = perm[: int(kv_indptr[-1])].clone()
    q = torch.randn((b * qo_len, h, 576), generator=g).to(dtype)
    return dict(
        qo_indptr=torch.arange(0, b + 1, dtype=torch.int32) * qo_len,
        kv_indptr=kv_indptr, kv_indices=kv_indices,
        kv_len=torch.tensor(lens, dtype=torch.int32),
        q_nope=q[..., :512], q_pe=q[..., 512:], ckv=buf[..., :512], kpe=buf[..., 512:],
        h=h, page_size=page_size, dtype=dtype,
    )


def plan_args(p, causal=False, sm_scale=192 ** -0.5, **over):
    args = dict(
        qo_indptr=p["qo_indptr"], kv_indptr=p["kv_indptr"], kv_indices=p["kv_indices"],
        kv_len_arr=p["kv_len"], num_heads=p["h"], head_dim_ckv=512, head_dim_kpe=64,
        page_size=p["page_size"], causal=causal, sm_scale=sm_scale,
        q_data_type=p["dtype"], kv_data_type=p["dtype"],
    )
    args.update(over)
    return args


def check_against_flashinfer(p, out, lse, causal, sm_scale=192 ** -0.5, base_e=False):
    ref_out, ref_lse = flashinfer_reference(
        p["qo_indptr"], p["kv_indptr"], p["kv_indices"], p["kv_len"], p["q_nope"], p["q_pe"],
        p["ckv"], p["kpe"], sm_scale, causal, p["page_size"],
    )
    torch.testing.assert_close(out.double(), ref_out, atol=2e-2, rtol=2e-2)
    if lse is not None:
        want = ref_lse * torch.log(torch.tensor(2.0, dtype=torch.float64)) if base_e else ref_lse
        torch.testing.assert_close(lse.double(), want, atol=1e-4, rtol=1e-5)


# ----------------------------------------------------------------------------- plan validation

def test_plan_derives_uniform_qo_len():
    p = make_problem([5, 17, 3], qo_len=2, h=4, page_size=4)
    plan = fe.plan_mla_decode(**plan_args(p, causal=True))
    assert (plan.batch_size, plan.qo_len, plan.total_q, plan.num_heads) == (3, 2, 6, 4)
    assert plan.causal is True and plan.page_size == 4
    assert plan.kv_indptr.dtype == torch.int32 and plan.kv_len.tolist() == [5, 17, 3]


def test_plan_accepts_int64_index_arrays_and_dtype_names():
    p = make_problem([5, 9], qo_len=1, h=2, page_size=4)
    plan = fe.plan_mla_decode(**plan_args(
        p, qo_indptr=p["qo_indptr"].long(), kv_indptr=p["kv_indptr"].long(),
        kv_len_arr=p["kv_len"].long(), q_data_type="bfloat16", kv_data_type=torch.bfloat16,
    ))
    assert plan.kv_indptr.dtype == torch.int32 and plan.qo_len == 1


@pytest.mark.parametrize(
    "override, exc, words",
    [
        (dict(qo_indptr=torch.tensor([0, 1, 3, 4], dtype=torch.int32)), ValueError, "same query length"),
        (dict(qo_indptr=torch.tensor([1, 2, 3, 4], dtype=torch.int32)), ValueError, "qo_indptr[0]"),
        (dict(qo_indptr=torch.tensor([0, 1, 1, 2], dtype=torch.int32)), ValueError, "qo_indptr"),
        (dict(qo_indptr=torch.tensor([0], dtype=torch.int32)), ValueError, "qo_indptr"),
        (dict(head_dim_ckv=576), ValueError, "head_dim_ckv"),
        (dict(head_dim_kpe=128), ValueError, "head_dim_kpe"),
        (dict(q_data_type=torch.float32, kv_data_type=torch.float32), TypeError, "q_data_type"),
        (dict(kv_data_type=torch.float16), TypeError, "kv_data_type"),
        (dict(kv_data_type=torch.float8_e4m3fn), TypeError, "kv_data_type"),
        (dict(use_profiler=True), ValueError, "use_profiler"),
        (dict(page_size=0), ValueError, "page_size"),
        (dict(num_heads=0), ValueError, "num_heads"),
        (dict(num_heads=2.0), TypeError, "num_heads"),
        (dict(sm_scale=float("nan")), ValueError, "sm_scale"),
        (dict(sm_scale=-1.0), ValueError, "sm_scale"),
        (dict(causal="yes"), TypeError, "causal"),
        (dict(kv_indices=torch.zeros(64, dtype=torch.int64)), TypeError, "kv_indices"),
        (dict(kv_indices=torch.zeros(1, dtype=torch.int32)), ValueError, "kv_indptr[-1]"),
        (dict(kv_indptr=torch.tensor([0, 3, 2, 5], dtype=torch.int32)), ValueError, "non-decreasing"),
        (dict(kv_indptr=torch.tensor([0, 3, 5], dtype=torch.int32)), ValueError, "kv_indptr"),
        (dict(kv_len_arr=torch.tensor([5, 9], dtype=torch.int32)), ValueError, "kv_len_arr"),
        (dict(kv_len_arr=torch.tensor([5, 999, 3], dtype=torch.int32)), ValueError, "kv_len_arr[1]"),
        (dict(kv_len_arr=torch.tensor([5, -1, 3], dtype=torch.int32)), ValueError, "kv_len_arr"),
        (dict(kv_len_arr=[5, 9, 3]), TypeError, "kv_len_arr"),
        (dict(qo_indptr=torch.tensor([0.0, 1.0, 2.0, 3.0])), TypeError, "qo_indptr"),
    ],
)
def test_plan_rejects(override, exc, words):
    p = make_problem([5, 9, 3], qo_len=1, h=4, page_size=4)
    with pytest.raises(exc) as info:
        fe.plan_mla_decode(**plan_args(p, **override))
    assert words in str(info.value)


def test_backend_plan_rejects_before_touching_state(kernels):
    p = make_problem([5, 9, 3], qo_len=1, h=4, page_size=4)
    backend = fe.EtapMLABackend(torch.empty(8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="same query length"):
        backend.plan(**plan_args(p, qo_indptr=torch.tensor([0, 1, 3, 4], dtype=torch.int32)))
    assert kernels.metadata_calls == 0
    with pytest.raises(RuntimeError, match="plan"):
        backend.run(p["q_nope"], p["q_pe"], p["ckv"], p["kpe"])


def test_constructor_checks():
    ws = torch.empty(8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="backend='etap'"):
        fe.EtapMLABackend(ws, backend="fa2")
    with pytest.raises(ValueError, match="kv_indptr"):
        fe.EtapMLABackend(ws, use_cuda_graph=True)
    i32 = torch.zeros(16, dtype=torch.int32)
    with pytest.raises(ValueError, match="kv_len_arr"):
        fe.EtapMLABackend(ws, True, i32, i32, i32, torch.zeros(16, dtype=torch.int64))


# ----------------------------------------------------------------------------- run semantics

@pytest.mark.parametrize(
    "lens, qo_len, page_size, causal",
    [
        ([1, 7, 33, 64], 1, 1, False),
        ([5, 16, 47], 1, 16, False),
        ([70, 3, 129], 2, 64, True),
        ([9, 2, 31], 2, 3, True),
        ([9, 12], 3, 4, False),
        ([0, 6], 1, 4, False),
    ],
)
def test_run_matches_flashinfer_semantics(kernels, lens, qo_len, page_size, causal):
    p = make_problem(lens, qo_len=qo_len, h=4, page_size=page_size)
    backend = fe.EtapMLABackend(torch.empty(8, dtype=torch.uint8))
    backend.plan(**plan_args(p, causal=causal))
    out, lse = backend.run(p["q_nope"], p["q_pe"], p["ckv"], p["kpe"], return_lse=True)
    assert out.shape == (len(lens) * qo_len, 4, 512) and out.dtype == torch.bfloat16
    assert lse.shape == (len(lens) * qo_len, 4) and lse.dtype == torch.float32
    check_against_flashinfer(p, out, lse, causal)
    call = kernels.decode_calls[-1]
    assert call["causal"] is causal and call["scale"] == pytest.approx(192 ** -0.5)
    assert call["validate_values"] is False  # plan() already checked lengths against pages


def test_run_writes_given_out_and_lse_in_place(kernels):
    p = make_problem([11, 40], qo_len=2, h=3, page_size=8)
    backend = fe.EtapMLABackend(torch.empty(8, dtype=torch.uint8))
    backend.plan(**plan_args(p, causal=True))
    out = torch.full((4, 3, 512), float("nan"), dtype=torch.bfloat16)
    lse = torch.full((4, 3), float("nan"))
    got_out, got_lse = backend.run(p["q_nope"], p["q_pe"], p["ckv"], p["kpe"], out=out, lse=lse, return_lse=True)
    assert got_out is out and got_lse is lse
    call = kernels.decode_calls[-1]
    assert call["out"].data_ptr() == out.data_ptr() and call["lse"].data_ptr() == lse.data_ptr()
    check_against_flashinfer(p, out, lse, causal=True)

    # FlashInfer writes a given lse even when it is not returned.
    lse.fill_(float("nan"))
    result = backend.run(p["q_nope"], p["q_pe"], p["ckv"], p["kpe"], out=out, lse=lse)
    assert result is out
    check_against_flashinfer(p, out, lse, causal=True)


def test_run_lse_base_e_and_no_lse(kernels):
    p = make_problem([13, 4], qo_len=1, h=2, page_size=4)
    backend = fe.EtapMLABackend(torch.empty(8, dtype=torch.uint8))
    backend.plan(**plan_args(p))
    out, lse = backend.run(p["q_nope"], p["q_pe"], p["ckv"], p["kpe"], return_lse=True, return_lse_base_on_e=True)
    check_against_flashinfer(p, out, lse, causal=False, base_e=True)
    only = backend.run(p["q_nope"], p["q_pe"], p["ckv"], p["kpe"])
    assert isinstance(only, torch.Tensor)
    check_against_flashinfer(p, only, None, causal=False)
    assert kernels.decode_calls[-1]["lse"] is None


def test_run_strided_lse_and_unaligned_out(kernels):
    p = make_problem([13, 21], qo_len=2, h=2, page_size=4)
    backend = fe.EtapMLABackend(torch.empty(8, dtype=torch.uint8))
    backend.plan(**plan_args(p))
    lse_t = torch.full((2, 4), float("nan"))  # lse given as a transposed view
    out_wide = torch.full((4, 2, 513), float("nan"), dtype=torch.bfloat16)
    out = out_wide[..., 1:]  # last dim contiguous, but 2-byte offset: not kernel-writable
    backend.run(p["q_nope"], p["q_pe"], p["ckv"], p["kpe"], out=out, lse=lse_t.T, return_lse=True)
    check_against_flashinfer(p, out, lse_t.T, causal=False)
    assert kernels.decode_calls[-1]["out"].data_ptr() != out.data_ptr()  # went through a temporary
    assert torch.isnan(out_wide[..., 0]).all()  # nothing outside out was written


@pytest.mark.parametrize(
    "bad, exc, words",
    [
        (dict(q_nope=lambda p: p["q_nope"][:2]), ValueError, "q_nope"),
        (dict(q_pe=lambda p: p["q_pe"].float()), TypeError, "q_pe"),
        (dict(ckv=lambda p: p["ckv"].reshape(-1, 2, 512)), ValueError, "page_size"),
        (dict(kpe=lambda p: p["kpe"][:1]), ValueError, "kpe_cache"),
        (dict(ckv=lambda p: p["ckv"].half(), kpe=lambda p: p["kpe"].half()), TypeError, "ckv_cache"),
        (dict(out=lambda p: torch.empty(2, 4, 512, dtype=torch.bfloat16)), ValueError, "Invalid shape of out"),
        (dict(out=lambda p: torch.empty(3, 4, 512, dtype=torch.float16)), ValueError, "Invalid dtype of out"),
        (dict(lse=lambda p: torch.empty(3, 4, dtype=torch.float16)), ValueError, "Invalid dtype of lse"),
        (dict(profiler_buffer=lambda p: torch.empty(1)), ValueError, "profiler_buffer"),
    ],
)
def test_run_rejects(kernels, bad, exc, words):
    p = make_problem([5, 9, 3], qo_len=1, h=4, page_size=4)
    backend = fe.EtapMLABackend(torch.empty(8, dtype=torch.uint8))
    backend.plan(**plan_args(p))
    args = dict(q_nope=p["q_nope"], q_pe=p["q_pe"], ckv=p["ckv"], kpe=p["kpe"], out=None, lse=None,
                profiler_buffer=None)
    args.update({k: f(p) for k, f in bad.items()})
    with pytest.raises(exc, match=words):
        backend.run(args["q_nope"], args["q_pe"], args["ckv"], args["kpe"], out=args["out"],
                    lse=args["lse"], profiler_buffer=args["profiler_buffer"])


# ----------------------------------------------------------------------------- CUDA-graph mode

def graph_backend(batch, max_indices):
    bufs = dict(
        qo_indptr=torch.zeros(batch + 1, dtype=torch.int32),
        kv_indptr=torch.zeros(batch + 1, dtype=torch.int32),
        kv_indices=torch.full((max_indices,), -1, dtype=torch.int32),
        kv_len_arr=torch.zeros(batch, dtype=torch.int32),
    )
    return fe.EtapMLABackend(torch.empty(8, dtype=torch.uint8), use_cuda_graph=True, **bufs), bufs


def test_graph_mode_plan_writes_fixed_buffers(kernels):
    backend, bufs = graph_backend(3, 256)
    p1 = make_problem([5, 30, 8], qo_len=2, h=4, page_size=4, seed=1)
    backend.plan(**plan_args(p1, causal=True))
    meta, splits = backend._metadata
    ptrs = (meta.data_ptr(), splits.data_ptr())
    assert torch.equal(bufs["kv_indptr"], p1["kv_indptr"]) and torch.equal(bufs["kv_len_arr"], p1["kv_len"])
    assert torch.equal(bufs["qo_indptr"], p1["qo_indptr"])
    n1 = p1["kv_indices"].numel()
    assert torch.equal(bufs["kv_indices"][:n1], p1["kv_indices"])
    out1 = backend.run(p1["q_nope"], p1["q_pe"], p1["ckv"], p1["kpe"])
    check_against_flashinfer(p1, out1, None, causal=True)

    # A new plan with other lengths lands in the same buffers (what a replayed graph reads).
    p2 = make_problem([50, 2, 17], qo_len=2, h=4, page_size=4, seed=2)
    backend.plan(**plan_args(p2, causal=True))
    assert (backend._metadata[0].data_ptr(), backend._metadata[1].data_ptr()) == ptrs
    assert int(meta[0, 0]) == 69  # recomputed in place from the new lengths
    assert backend._kv_len_dev.data_ptr() == bufs["kv_len_arr"].data_ptr()
    assert backend._kv_indices_dev.data_ptr() == bufs["kv_indices"].data_ptr()
    out2, lse2 = backend.run(p2["q_nope"], p2["q_pe"], p2["ckv"], p2["kpe"], return_lse=True)
    check_against_flashinfer(p2, out2, lse2, causal=True)


def test_graph_mode_refuses_shape_changes(kernels):
    backend, _ = graph_backend(3, 64)
    p = make_problem([5, 9, 8], qo_len=1, h=4, page_size=4)
    backend.plan(**plan_args(p))
    with pytest.raises(ValueError, match="batch_size"):
        q = make_problem([5, 9], qo_len=1, h=4, page_size=4)
        backend.plan(**plan_args(q))
    with pytest.raises(ValueError, match="causal"):
        backend.plan(**plan_args(p, causal=True))
    with pytest.raises(ValueError, match="num_heads"):
        backend.plan(**plan_args(p, num_heads=8))
    big, _ = graph_backend(3, 2)
    with pytest.raises(ValueError, match="kv_indices buffer"):
        big.plan(**plan_args(p))


def test_graph_mode_fast_replan_through_cached_module(kernels):
    """sglang's fast_mla_decode_plan calls wrapper._cached_module.plan(...) with host arrays
    after writing the page indices into the kv_indices buffer itself."""
    backend, bufs = graph_backend(2, 128)
    p1 = make_problem([9, 20], qo_len=1, h=2, page_size=1, seed=3)
    backend.plan(**plan_args(p1))
    p2 = make_problem([31, 4], qo_len=1, h=2, page_size=1, seed=4)
    bufs["kv_indices"][: p2["kv_indices"].numel()] = p2["kv_indices"]
    backend._cached_module.plan(
        backend._float_workspace_buffer, backend._int_workspace_buffer,
        backend._pin_memory_int_workspace_buffer, p2["qo_indptr"], p2["kv_indptr"].long(),
        p2["kv_len"], 2, 512, False,
    )
    assert torch.equal(bufs["kv_len_arr"], p2["kv_len"])
    out = backend.run(p2["q_nope"], p2["q_pe"], p2["ckv"], p2["kpe"])
    check_against_flashinfer(p2, out, None, causal=False)


# ----------------------------------------------------------------------------- the patch

def _download_pinned_wheel(dest: Path) -> Path:
    local = os.environ.get("ETAP_FLASHINFER_WHEEL")
    if local:
        return Path(local)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
           "--disable-pip-version-check", "--retries", "1", "--timeout", "30",
           "--only-binary=:all:", "--dest", str(dest),
           f"flashinfer-python=={PINNED}"]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot download flashinfer-python=={PINNED} from PyPI: {exc}")
    wheels = sorted(dest.glob("flashinfer_python-*.whl"))
    if res.returncode != 0 or not wheels:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["?"]
        pytest.skip(f"cannot download flashinfer-python=={PINNED} from PyPI (offline?): {tail[0]}")
    return wheels[0]


@pytest.fixture(scope="session")
def pinned_site(tmp_path_factory) -> Path:
    """The pinned wheel's flashinfer/__init__.py, flashinfer/mla.py and dist-info METADATA."""
    base = tmp_path_factory.mktemp("flashinfer_wheel")
    wheel = _download_pinned_wheel(base)
    site = base / "site"
    wanted = ("flashinfer/__init__.py", "flashinfer/mla.py")
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name in wanted or (name.endswith(".dist-info/METADATA") and name.count("/") == 1):
                zf.extract(name, site)
    assert (site / "flashinfer" / "mla.py").is_file()
    return site


@pytest.fixture
def site(pinned_site, tmp_path) -> Path:
    dest = tmp_path / "site-packages"
    shutil.copytree(pinned_site, dest)
    return dest


def _load_script():
    spec = importlib.util.spec_from_file_location("etap_apply_flashinfer_patch", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


apply_script = _load_script()


def apply(*args) -> int:
    return apply_script.run([str(a) for a in args])


def test_patch_names_its_pinned_version():
    patch = apply_script.parse_patch(PATCH.read_text(), str(PATCH))
    assert (patch.dist, patch.version) == ("flashinfer-python", PINNED)
    assert [f.path for f in patch.files] == ["flashinfer/mla.py"]


def test_patch_applies_and_compiles(site, capsys):
    mla = site / "flashinfer" / "mla.py"
    original = mla.read_text()
    assert apply("--site-dir", site, "--check") == 0
    assert mla.read_text() == original and "applies cleanly" in capsys.readouterr().out
    assert apply("--site-dir", site) == 0
    patched = mla.read_text()
    assert patched != original
    py_compile.compile(str(mla), cfile=str(site / "mla.pyc"), doraise=True)
    # The etap branches of the real wrapper.
    assert 'if backend == "etap":' in patched
    assert patched.count('if self._backend == "etap":') == 2  # plan() and run()
    assert "from etap_integration.flashinfer_etap import EtapMLABackend" in patched
    assert "return self._etap.run(" in patched and "self._etap.plan(" in patched
    # Nothing else in the tree was touched or created.
    assert sorted(p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()) == sorted(
        ["flashinfer/__init__.py", "flashinfer/mla.py", "mla.pyc",
         f"flashinfer_python-{PINNED}.dist-info/METADATA"])


def test_patch_is_idempotent_and_revertible(site, capsys):
    mla = site / "flashinfer" / "mla.py"
    original = mla.read_text()
    assert apply("--site-dir", site) == 0
    patched = mla.read_text()
    capsys.readouterr()
    assert apply("--site-dir", site) == 0
    assert "already applied" in capsys.readouterr().out and mla.read_text() == patched
    assert apply("--site-dir", site, "--check") == 0
    assert "already applied" in capsys.readouterr().out
    assert apply("--site-dir", site, "--revert") == 0
    assert mla.read_text() == original
    assert apply("--site-dir", site, "--revert") == 0
    assert "not applied" in capsys.readouterr().out and mla.read_text() == original


def test_wrong_version_is_refused(site, capsys):
    meta = site / f"flashinfer_python-{PINNED}.dist-info" / "METADATA"
    meta.write_text(meta.read_text().replace(f"Version: {PINNED}", "Version: 0.6.6"))
    mla = site / "flashinfer" / "mla.py"
    original = mla.read_text()
    assert apply("--site-dir", site) == 2
    err = capsys.readouterr().err
    assert "0.6.6" in err and PINNED in err
    # Forcing this patch onto the other version is refused too.
    assert apply("--site-dir", site, "--patch", PATCH) == 2
    assert "refusing" in capsys.readouterr().err
    assert mla.read_text() == original


def test_modified_source_is_refused(site, capsys):
    mla = site / "flashinfer" / "mla.py"
    line = "    return gen_batch_mla_module(backend, *args).build_and_load()\n"  # patch context
    text = mla.read_text()
    assert text.count(line) == 1
    text = text.replace(line, line.replace("()", "()  # local change"))
    mla.write_text(text)
    assert apply("--site-dir", site, "--check") == 4
    assert apply("--site-dir", site) == 4
    assert "does not apply" in capsys.readouterr().err
    assert mla.read_text() == text


def test_missing_flashinfer_is_reported(tmp_path, capsys):
    assert apply("--site-dir", tmp_path) == 3
    assert "no flashinfer/" in capsys.readouterr().err


def test_default_location_found_without_importing(site):
    """Without --site-dir the script finds flashinfer on sys.path and never imports it."""
    (site / "flashinfer" / "__init__.py").write_text("raise RuntimeError('flashinfer was imported')\n")
    env = dict(os.environ, PYTHONPATH=str(site))
    res = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    assert str(site.resolve()) in res.stdout
    assert "etap" in (site / "flashinfer" / "mla.py").read_text()


# ----------------------------------------------------------------------------- patched wrapper

STUBS = {
    "flashinfer/__init__.py": "",
    "flashinfer/api_logging.py": """
        def flashinfer_api(func=None, **kwargs):
            return func if func is not None else (lambda f: f)
    """,
    "flashinfer/jit/__init__.py": """
        def _compiled(*args, **kwargs):
            raise RuntimeError("compiled flashinfer modules are not available in this test")
        gen_batch_mla_module = gen_trtllm_gen_fmha_module = setup_cubin_loader = _compiled
    """,
    "flashinfer/jit/mla.py": "from . import _compiled as gen_mla_module\n",
    "flashinfer/xqa.py": "def xqa_mla(*args, **kwargs):\n    raise RuntimeError('stub')\n",
    "flashinfer/utils.py": """
        import enum
        log2e = 1.44269504088896340736
        class MaskMode(enum.Enum):
            NON_CAUSAL = 0
            CAUSAL = 1
        def _unavailable(*args, **kwargs):
            raise RuntimeError("stub")
        _check_block_tables_shape = device_support_pdl = get_compute_capability = _unavailable
        get_device_sm_count = _unavailable
        def determine_mla_backend(device):
            return "fa2"
        def check_shape_dtype_device(x, shape, dtype, device, name):
            raise AssertionError("the etap branch must not reach FlashInfer's own checks")
    """,
}

DRIVER = """
import importlib, importlib.util, sys
sys.path.insert(0, {site!r})
spec = importlib.util.spec_from_file_location("etap_flashinfer_tests", {tests!r})
tests = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tests)
import torch
import flashinfer.mla as mla
assert "etap_integration" in sys.modules  # loaded by the test module, not by flashinfer.mla

fake = tests.FakeKernels()
tests.fe._kernels = lambda: (fake.get_mla_metadata, fake.mla_decode)
W = mla.BatchMLAPagedAttentionWrapper

# eager: decode with qo_len 2, causal, page size 16
p = tests.make_problem([37, 5, 80], qo_len=2, h=4, page_size=16)
w = W(torch.empty(16, dtype=torch.uint8), backend="etap")
assert w._backend == "etap" and isinstance(w._etap, tests.fe.EtapMLABackend)
w.plan(*tests.plan_args(p, causal=True).values())
out = torch.full((6, 4, 512), float("nan"), dtype=torch.bfloat16)
got, lse = w.run(p["q_nope"], p["q_pe"], p["ckv"], p["kpe"], out=out, return_lse=True)
assert got is out
tests.check_against_flashinfer(p, out, lse, causal=True)

# refusal at plan time goes through the real wrapper
try:
    w.plan(*tests.plan_args(p, head_dim_ckv=128).values())
    raise AssertionError("expected ValueError")
except ValueError as exc:
    assert "head_dim_ckv" in str(exc)

# CUDA-graph mode, sglang-style fast re-plan through the mirrored internals
bufs = dict(qo_indptr=torch.zeros(3, dtype=torch.int32), kv_indptr=torch.zeros(3, dtype=torch.int32),
            kv_indices=torch.zeros(64, dtype=torch.int32), kv_len_arr=torch.zeros(2, dtype=torch.int32))
g = W(torch.empty(16, dtype=torch.uint8), use_cuda_graph=True, backend="etap", **bufs)
p1 = tests.make_problem([9, 20], qo_len=1, h=2, page_size=1, seed=1)
g.plan(**tests.plan_args(p1))
p2 = tests.make_problem([31, 4], qo_len=1, h=2, page_size=1, seed=2)
bufs["kv_indices"][: p2["kv_indices"].numel()] = p2["kv_indices"]
g._cached_module.plan(g._float_workspace_buffer, g._int_workspace_buffer,
                      g._pin_memory_int_workspace_buffer, p2["qo_indptr"], p2["kv_indptr"],
                      p2["kv_len"], 2, 512, False)
tests.check_against_flashinfer(p2, g.run(p2["q_nope"], p2["q_pe"], p2["ckv"], p2["kpe"]), None, causal=False)

# without the ETAP package: a clear ImportError, only when backend="etap" is asked for
sys.modules["etap_integration.flashinfer_etap"] = None
try:
    W(torch.empty(16, dtype=torch.uint8), backend="etap")
    raise AssertionError("expected ImportError")
except ImportError as exc:
    assert "needs the ETAP package" in str(exc), exc
print("DRIVER-OK")
"""


def test_patched_wrapper_delegates_to_etap(site, tmp_path):
    """Runs the real patched mla.py (flashinfer's compiled parts stubbed) in a subprocess."""
    assert apply("--site-dir", site) == 0
    for rel, body in STUBS.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body))
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(site=str(site), tests=str(Path(__file__).resolve())))
    res = subprocess.run([sys.executable, str(driver)], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert res.returncode == 0 and "DRIVER-OK" in res.stdout, res.stdout + res.stderr
