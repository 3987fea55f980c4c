"""GPU tests of ``backend="etap"`` in the patched FlashInfer ``BatchMLAPagedAttentionWrapper``.

ETAP and FlashInfer's own ``fa2`` backend run on identical inputs (bf16; page sizes 1/16/64;
mixed lengths; qo_len 1, and 2 with causal masking; 16 and 128 heads); ``out`` and base-2 ``lse``
must agree with each other and with the float64 ``etap_kernels.reference`` (converted to
FlashInfer's layout and log base). Outputs are NaN-poisoned before every call. The CUDA-graph
test captures ``run`` once and replays it after re-planning with new lengths and pages, through
``plan`` and through the ``_cached_module.plan`` fast path that sglang uses during replay.

Needs a Hopper GPU, flashinfer-python 0.6.7.post3 patched with
``scripts/apply_flashinfer_patch.py``, and the ETAP project installed.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.gpu

SM_SCALE = 192 ** -0.5  # DeepSeek-V3: softmax scale of the un-absorbed head dim (128 + 64)
LOG2E = 1.0 / math.log(2.0)
DTYPE = torch.bfloat16


@pytest.fixture(scope="module")
def wrapper_cls():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU available")
    pytest.importorskip("flashinfer")
    import flashinfer.mla

    source = Path(flashinfer.mla.__file__).read_text()
    if "etap_integration.flashinfer_etap" not in source:
        pytest.skip("flashinfer is not patched for backend='etap': run scripts/apply_flashinfer_patch.py")
    return flashinfer.mla.BatchMLAPagedAttentionWrapper


@pytest.fixture(scope="module")
def workspace(wrapper_cls):
    return torch.empty(128 * 1024 * 1024, dtype=torch.int8, device="cuda")


def page_layout(lens, page_size, num_pages, generator):
    """kv_indptr / kv_indices (int32, CPU) for lens, pages drawn at random from the cache."""
    pages_per = [max(1, -(-n // page_size)) for n in lens]
    assert sum(pages_per) <= num_pages
    perm = torch.randperm(num_pages, generator=generator).to(torch.int32)
    indptr = torch.tensor([0] + torch.tensor(pages_per).cumsum(0).tolist(), dtype=torch.int32)
    return indptr, perm[: int(indptr[-1])].clone()


class Case:
    """One decode step in FlashInfer's layout; caches are views of one [pages, ps, 576] buffer."""

    def __init__(self, lens, qo_len, h, page_size, seed, num_pages=None):
        g = torch.Generator().manual_seed(seed)
        self.b, self.qo_len, self.h, self.page_size = len(lens), qo_len, h, page_size
        if num_pages is None:
            num_pages = sum(max(1, -(-n // page_size)) for n in lens) + 7
        cache = torch.randn((num_pages, page_size, 576), generator=g).to(DTYPE).cuda()
        self.ckv, self.kpe = cache[..., :512], cache[..., 512:]
        self.new_step(lens, seed + 1)

    def new_step(self, lens, seed):
        assert len(lens) == self.b
        g = torch.Generator().manual_seed(seed)
        indptr, indices = page_layout(lens, self.page_size, self.ckv.shape[0], g)
        self.kv_len = torch.tensor(lens, dtype=torch.int32)
        self.kv_indptr, self.kv_indices = indptr, indices
        self.qo_indptr = torch.arange(self.b + 1, dtype=torch.int32) * self.qo_len
        q = torch.randn((self.b * self.qo_len, self.h, 576), generator=g).to(DTYPE).cuda()
        self.q_nope, self.q_pe = q[..., :512], q[..., 512:]
        return self

    def plan_args(self, causal):
        return (
            self.qo_indptr.cuda(), self.kv_indptr.cuda(), self.kv_indices.cuda(), self.kv_len.cuda(),
            self.h, 512, 64, self.page_size, causal, SM_SCALE, DTYPE, DTYPE,
        )

    def reference(self, causal):
        """float64 (out [total_q, h, 512], base-2 lse [total_q, h]) from etap_kernels.reference."""
        from etap_kernels.reference import mla_decode_reference

        split = (self.b, self.qo_len)
        out, lse = mla_decode_reference(
            self.q_nope.unflatten(0, split), self.q_pe.unflatten(0, split), self.ckv, self.kpe,
            self.kv_len.cuda(), kv_indptr=self.kv_indptr.cuda(), kv_indices=self.kv_indices.cuda(),
            softmax_scale=SM_SCALE, causal=causal,
        )
        return out.flatten(0, 1), lse.permute(0, 2, 1).flatten(0, 1) * LOG2E

    def poisoned(self):
        total = self.b * self.qo_len
        out = torch.full((total, self.h, 512), float("nan"), dtype=DTYPE, device="cuda")
        lse = torch.full((total, self.h), float("nan"), dtype=torch.float32, device="cuda")
        return out, lse


def run_eager(wrapper_cls, workspace, backend, case, causal):
    w = wrapper_cls(workspace, backend=backend)
    w.plan(*case.plan_args(causal))
    out, lse = case.poisoned()
    got_out, got_lse = w.run(case.q_nope, case.q_pe, case.ckv, case.kpe, out=out, lse=lse, return_lse=True)
    assert got_out is out and got_lse is lse
    torch.cuda.synchronize()
    return out, lse


def assert_matches(out, lse, ref_out, ref_lse, what):
    assert torch.isfinite(out).all(), f"{what}: non-finite out (poisoned rows left unwritten?)"
    assert not torch.isnan(lse).any(), f"{what}: NaN lse"
    torch.testing.assert_close(out.double(), ref_out, atol=2e-2, rtol=2e-2, msg=lambda m: f"{what} out: {m}")
    torch.testing.assert_close(lse.double(), ref_lse, atol=5e-3, rtol=1e-3, msg=lambda m: f"{what} lse: {m}")


def lens_for(qo_len):
    return [max(qo_len, 1), 17, 64, 129, 511, 1000, 1537, 300]


@pytest.mark.parametrize("page_size", [1, 16, 64])
@pytest.mark.parametrize("h", [16, 128])
@pytest.mark.parametrize("qo_len, causal", [(1, False), (2, True)])
def test_etap_matches_fa2_eager(wrapper_cls, workspace, page_size, h, qo_len, causal):
    case = Case(lens_for(qo_len), qo_len, h, page_size, seed=page_size * 1000 + h + qo_len)
    ref_out, ref_lse = case.reference(causal)
    etap_out, etap_lse = run_eager(wrapper_cls, workspace, "etap", case, causal)
    fa2_out, fa2_lse = run_eager(wrapper_cls, workspace, "fa2", case, causal)
    assert_matches(etap_out, etap_lse, ref_out, ref_lse, "etap vs reference")
    assert_matches(fa2_out, fa2_lse, ref_out, ref_lse, "fa2 vs reference")
    torch.testing.assert_close(etap_out, fa2_out, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(etap_lse, fa2_lse, atol=5e-3, rtol=1e-3)


def test_etap_base_e_lse_and_empty_sequences(wrapper_cls, workspace):
    case = Case([0, 33, 0, 200], qo_len=1, h=16, page_size=16, seed=7)
    ref_out, ref_lse = case.reference(False)
    w = wrapper_cls(workspace, backend="etap")
    w.plan(*case.plan_args(False))
    out, lse = case.poisoned()
    w.run(case.q_nope, case.q_pe, case.ckv, case.kpe, out=out, lse=lse, return_lse=True, return_lse_base_on_e=True)
    torch.cuda.synchronize()
    assert_matches(out, lse, ref_out, ref_lse / LOG2E, "etap base-e")
    assert (out[[0, 2]] == 0).all() and torch.isneginf(lse[[0, 2]]).all()
    only = w.run(case.q_nope, case.q_pe, case.ckv, case.kpe)
    assert isinstance(only, torch.Tensor) and only.shape == out.shape


@pytest.mark.parametrize(
    "page_size, h, qo_len, causal",
    [(1, 16, 1, False), (16, 128, 1, False), (64, 128, 2, True)],
)
def test_etap_cuda_graph_replay(wrapper_cls, workspace, page_size, h, qo_len, causal):
    b, max_len = 6, 1200
    steps = [
        [5, 700, 64, 129, 1, 33],
        [1100, 2, 17, 400, 999, 64],
        [3, 3, 1200, 250, 77, 640],
        [64, 512, 9, 1, 1000, 128],
    ]
    steps = [[max(n, qo_len) for n in lens] for lens in steps]
    max_pages = b * -(-max_len // page_size)
    case = Case(steps[0], qo_len, h, page_size, seed=11, num_pages=max_pages + 3)
    bufs = dict(
        qo_indptr=torch.zeros(b + 1, dtype=torch.int32, device="cuda"),
        kv_indptr=torch.zeros(b + 1, dtype=torch.int32, device="cuda"),
        kv_indices=torch.zeros(max_pages, dtype=torch.int32, device="cuda"),
        kv_len_arr=torch.zeros(b, dtype=torch.int32, device="cuda"),
    )
    w = wrapper_cls(workspace, use_cuda_graph=True, backend="etap", **bufs)
    q_nope = torch.empty_like(case.q_nope)  # static inputs/outputs of the captured graph
    q_pe = torch.empty_like(case.q_pe)
    out, lse = case.poisoned()

    w.plan(*case.plan_args(causal))
    q_nope.copy_(case.q_nope)
    q_pe.copy_(case.q_pe)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up (loads the extension) outside the capture
        w.run(q_nope, q_pe, case.ckv, case.kpe, out=out, lse=lse, return_lse=True)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        w.run(q_nope, q_pe, case.ckv, case.kpe, out=out, lse=lse, return_lse=True)

    for step, lens in enumerate(steps):
        case.new_step(lens, seed=100 + step)
        if step == 3:
            # sglang's replay path: indices written into the buffer, then the fast re-plan with
            # host arrays through the wrapper's mirrored _cached_module.
            bufs["kv_indices"][: case.kv_indices.numel()].copy_(case.kv_indices)
            w._cached_module.plan(
                workspace, w._int_workspace_buffer, w._pin_memory_int_workspace_buffer,
                case.qo_indptr, case.kv_indptr, case.kv_len, h, 512, causal,
            )
        else:
            w.plan(*case.plan_args(causal))
        q_nope.copy_(case.q_nope)
        q_pe.copy_(case.q_pe)
        out.fill_(float("nan"))
        lse.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        ref_out, ref_lse = case.reference(causal)
        assert_matches(out, lse, ref_out, ref_lse, f"etap graph replay, step {step}")
        fa2_out, fa2_lse = run_eager(wrapper_cls, workspace, "fa2", case, causal)
        torch.testing.assert_close(out, fa2_out, atol=2e-2, rtol=2e-2)
        torch.testing.assert_close(lse, fa2_lse, atol=5e-3, rtol=1e-3)
