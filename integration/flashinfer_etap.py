"""ETAP behind FlashInfer's ``BatchMLAPagedAttentionWrapper`` (``backend="etap"``).

``EtapMLABackend`` takes the constructor, ``plan(...)`` and ``run(...)`` arguments of
``flashinfer.mla.BatchMLAPagedAttentionWrapper`` as of flashinfer-python 0.6.7.post3 and returns
the same outputs, computed by ``etap_kernels.mla_decode``. The patched FlashInfer wrapper
(``patches/flashinfer-0.6.7.post3-etap.patch``) delegates to it; it can also be used directly.

FlashInfer conventions reproduced here (checked against the 0.6.7.post3 sources):

- Shapes: ``q_nope [total_q, h, 512]``, ``q_pe [total_q, h, 64]``,
  ``ckv_cache [num_pages, page_size, 512]``, ``kpe_cache [num_pages, page_size, 64]`` (strided
  views of one 576-wide buffer are fine), ``out [total_q, h, 512]``, ``lse float32 [total_q, h]``.
  Pages of request ``i`` are ``kv_indices[kv_indptr[i]:kv_indptr[i + 1]]``, its KV length is
  ``kv_len_arr[i]``; query rows of request ``i`` are ``qo_indptr[i]:qo_indptr[i + 1]``.
- LSE: base 2 by default (FlashInfer writes ``log2(sum exp2(s * sm_scale * log2 e))``);
  ``run(..., return_lse_base_on_e=True)`` gives natural log. ETAP computes natural log, so the
  result is multiplied by ``log2(e)`` in place unless base e was asked for.
- Causal (qo_len > 1): FlashInfer masks ``kv_idx + qo_len > kv_len + q_idx``, i.e. query ``t``
  sees KV positions ``< kv_len - (qo_len - 1 - t)``: bottom-right alignment, the same rule as
  FlashMLA/ETAP, so ``causal`` is passed through unchanged.
- ``out``/``lse`` given to ``run`` are written in place and returned by identity. As in
  FlashInfer, a given ``lse`` is written even with ``return_lse=False``.
- CUDA graphs (``use_cuda_graph=True``): ``plan`` copies ``kv_indptr``/``kv_len_arr``/
  ``kv_indices`` (and ``qo_indptr``) into the buffers passed to the constructor and recomputes
  the ETAP split schedule (``etap_kernels.get_mla_metadata``, on the GPU, no host sync) into
  buffers allocated at the first plan. A captured ``run`` reads only those fixed buffers, so
  replaying it after a new ``plan`` uses the new lengths and pages.

What ETAP refuses (at plan time, with ``ValueError``/``TypeError`` naming the argument):
non-uniform query lengths, head dims other than 512/64, dtypes other than bf16/fp16 or
``q_data_type != kv_data_type``, ``use_profiler=True``. The FlashInfer argument checks that
need the data (lengths vs pages, indptr monotonicity) run on the host copies that ``plan`` makes
anyway (FlashInfer's own ``plan`` syncs the same way).

Everything up to the copies into device buffers is plain torch and runs on CPU tensors; the only
GPU calls are ``get_mla_metadata`` (in ``plan``) and ``mla_decode`` (in ``run``), reached through
``_kernels()`` so tests can substitute them.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch

__all__ = ["EtapMLABackend", "EtapMLAPlan", "plan_mla_decode", "LOG2E"]

HEAD_DIM_CKV = 512
HEAD_DIM_KPE = 64
LOG2E = 1.0 / math.log(2.0)  # natural-log LSE -> FlashInfer's base-2 LSE
_DTYPES = (torch.bfloat16, torch.float16)
_INDEX_DTYPES = (torch.int32, torch.int64)
_INT32_MAX = 2**31 - 1


# ----------------------------------------------------------------------------- kernels

def _kernels():
    """``(get_mla_metadata, mla_decode)`` from the installed ``etap_kernels``."""
    try:
        import etap_kernels
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(
            "the FlashInfer 'etap' MLA backend needs the etap_kernels package "
            f"(install the ETAP project): {exc}"
        ) from exc
    return etap_kernels.get_mla_metadata, etap_kernels.mla_decode


@functools.lru_cache(maxsize=None)
def _takes_validate_values(mla_decode) -> bool:
    try:
        return "validate_values" in inspect.signature(mla_decode).parameters
    except (TypeError, ValueError):
        return False


def _decode_kwargs(mla_decode) -> dict:
    """Skip mla_decode's per-call value check (a host sync per layer): plan() validated lengths."""
    return {"validate_values": False} if _takes_validate_values(mla_decode) else {}


# ----------------------------------------------------------------------------- plan (CPU)

@dataclass(frozen=True)
class EtapMLAPlan:
    """A validated FlashInfer MLA plan in ETAP's terms; index arrays are int32 CPU tensors."""

    batch_size: int
    qo_len: int
    num_heads: int
    page_size: int
    causal: bool
    sm_scale: float
    q_data_type: torch.dtype
    kv_data_type: torch.dtype
    kv_indptr: torch.Tensor  # int32 [batch_size + 1], host
    kv_len: torch.Tensor  # int32 [batch_size], host
    num_kv_indices: int  # len(kv_indices) the plan was made with

    @property
    def total_q(self) -> int:
        return self.batch_size * self.qo_len

    def launch_key(self) -> tuple:
        """What a captured CUDA graph bakes in; only lengths and page indices may change."""
        return (
            self.batch_size, self.qo_len, self.num_heads, self.page_size, self.causal,
            self.sm_scale, self.q_data_type, self.kv_data_type,
        )


def _dtype_name(d) -> str:
    return str(d).replace("torch.", "")


def _as_dtype(name: str, value) -> torch.dtype:
    if isinstance(value, str):
        resolved = getattr(torch, value.replace("torch.", ""), None)
        if isinstance(resolved, torch.dtype):
            return resolved
    if not isinstance(value, torch.dtype):
        raise TypeError(f"{name} must be a torch.dtype, got {value!r}")
    return value


def _as_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _host_index_vector(name: str, t) -> torch.Tensor:
    """A 1-D integer tensor (any device) as an int64 CPU tensor (one device->host copy)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _INDEX_DTYPES:
        raise TypeError(f"{name} must have dtype int32 or int64, got {_dtype_name(t.dtype)}")
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    host = t.detach().to("cpu", torch.int64)
    if host.numel() and (int(host.min()) < 0 or int(host.max()) > _INT32_MAX):
        raise ValueError(f"{name} values must lie in [0, 2**31 - 1]")
    return host


def plan_mla_decode(
    qo_indptr: torch.Tensor,
    kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    kv_len_arr: torch.Tensor,
    num_heads: int,
    head_dim_ckv: int,
    head_dim_kpe: int,
    page_size: int,
    causal: bool,
    sm_scale: float,
    q_data_type: torch.dtype,
    kv_data_type: torch.dtype,
    use_profiler: bool = False,
) -> EtapMLAPlan:
    """Validate FlashInfer ``plan()`` arguments for ETAP and derive the uniform query length.

    Pure host code (reads index tensors through one copy to CPU); raises ``ValueError`` or
    ``TypeError`` naming the offending argument.
    """
    num_heads = _as_int("num_heads", num_heads, 1)
    head_dim_ckv = _as_int("head_dim_ckv", head_dim_ckv, 1)
    head_dim_kpe = _as_int("head_dim_kpe", head_dim_kpe, 1)
    if head_dim_ckv != HEAD_DIM_CKV or head_dim_kpe != HEAD_DIM_KPE:
        raise ValueError(
            f"the etap backend supports head_dim_ckv={HEAD_DIM_CKV} and head_dim_kpe={HEAD_DIM_KPE} "
            f"(DeepSeek-V2/V3 MLA), got head_dim_ckv={head_dim_ckv}, head_dim_kpe={head_dim_kpe}"
        )
    page_size = _as_int("page_size", page_size, 1)
    if isinstance(causal, bool) or (isinstance(causal, numbers.Integral) and int(causal) in (0, 1)):
        causal = bool(causal)
    else:
        raise TypeError(f"causal must be a bool, got {causal!r}")
    if isinstance(sm_scale, bool) or not isinstance(sm_scale, numbers.Real):
        raise TypeError(f"sm_scale must be a float, got {type(sm_scale).__name__}")
    sm_scale = float(sm_scale)
    if not math.isfinite(sm_scale) or sm_scale <= 0.0:
        raise ValueError(f"sm_scale must be finite and > 0, got {sm_scale}")
    q_data_type = _as_dtype("q_data_type", q_data_type)
    kv_data_type = _as_dtype("kv_data_type", kv_data_type)
    if q_data_type not in _DTYPES:
        raise TypeError(f"the etap backend supports q_data_type bfloat16 or float16, got {_dtype_name(q_data_type)}")
    if kv_data_type != q_data_type:
        raise TypeError(
            f"the etap backend needs kv_data_type == q_data_type, got kv_data_type "
            f"{_dtype_name(kv_data_type)} and q_data_type {_dtype_name(q_data_type)}"
        )
    if use_profiler:
        raise ValueError("use_profiler=True is not supported by the etap backend")

    qo = _host_index_vector("qo_indptr", qo_indptr)
    if qo.numel() < 2:
        raise ValueError(f"qo_indptr must have batch_size + 1 >= 2 entries, got {qo.numel()}")
    batch = qo.numel() - 1
    if int(qo[0]) != 0:
        raise ValueError(f"qo_indptr[0] must be 0, got {int(qo[0])}")
    qo_lens = qo[1:] - qo[:-1]
    if bool((qo_lens < 1).any()):
        raise ValueError(f"qo_indptr must be strictly increasing (every request has >= 1 query token), got {qo.tolist()}")
    qo_len = int(qo_lens[0])
    if bool((qo_lens != qo_len).any()):
        raise ValueError(
            "the etap backend needs the same query length for every request (decode, or a fixed "
            f"number of speculative tokens); qo_indptr gives lengths {sorted(set(qo_lens.tolist()))}"
        )

    kvp = _host_index_vector("kv_indptr", kv_indptr)
    if kvp.numel() != batch + 1:
        raise ValueError(f"kv_indptr must have batch_size + 1 = {batch + 1} entries, got {kvp.numel()}")
    pages = kvp[1:] - kvp[:-1]
    if bool((pages < 0).any()):
        raise ValueError(f"kv_indptr must be non-decreasing, got {kvp.tolist()}")

    if not isinstance(kv_indices, torch.Tensor):
        raise TypeError(f"kv_indices must be a torch.Tensor, got {type(kv_indices).__name__}")
    if kv_indices.dtype != torch.int32:
        raise TypeError(f"kv_indices must have dtype int32, got {_dtype_name(kv_indices.dtype)}")
    if kv_indices.dim() != 1:
        raise ValueError(f"kv_indices must be 1-D, got shape {tuple(kv_indices.shape)}")
    if int(kvp[-1]) > kv_indices.numel():
        raise ValueError(
            f"kv_indptr[-1] = {int(kvp[-1])} exceeds the {kv_indices.numel()} entries of kv_indices"
        )

    kv_len = _host_index_vector("kv_len_arr", kv_len_arr)
    if kv_len.numel() != batch:
        raise ValueError(f"kv_len_arr must have batch_size = {batch} entries, got {kv_len.numel()}")
    over = kv_len > pages * page_size
    if bool(over.any()):
        i = int(over.nonzero()[0, 0])
        raise ValueError(
            f"kv_len_arr[{i}] = {int(kv_len[i])} exceeds the {int(pages[i])} pages x page_size "
            f"{page_size} that kv_indptr gives request {i}"
        )

    return EtapMLAPlan(
        batch_size=batch,
        qo_len=qo_len,
        num_heads=num_heads,
        page_size=page_size,
        causal=causal,
        sm_scale=sm_scale,
        q_data_type=q_data_type,
        kv_data_type=kv_data_type,
        kv_indptr=kvp.to(torch.int32),
        kv_len=kv_len.to(torch.int32),
        num_kv_indices=kv_indices.numel(),
    )


# ----------------------------------------------------------------------------- helpers

def _check_shape_dtype_device(x, shape, dtype, device, name: str) -> None:
    """FlashInfer's ``check_shape_dtype_device`` (same messages, ``ValueError``)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.shape != torch.Size(shape):
        raise ValueError(f"Invalid shape of {name}: expected {tuple(shape)}, got {x.shape}")
    if x.dtype != dtype:
        raise ValueError(f"Invalid dtype of {name}: expected {dtype}, got {x.dtype}")
    if x.device != device:
        raise ValueError(f"Invalid device of {name}: expected {device}, got {x.device}")


def _vector_friendly(t: torch.Tensor) -> bool:
    """What mla_decode accepts for q/out: last dim contiguous, 16-byte aligned strides and base."""
    if t.stride(-1) != 1:
        return False
    per16 = 16 // t.element_size()
    if any(t.shape[d] > 1 and t.stride(d) % per16 for d in range(t.dim() - 1)):
        return False
    return t.data_ptr() % 16 == 0


def _check_index_buffer(name: str, buf, device) -> None:
    if not isinstance(buf, torch.Tensor):
        raise ValueError(f"use_cuda_graph=True needs a preallocated {name} buffer, got {buf!r}")
    if buf.dtype != torch.int32 or buf.dim() != 1 or not buf.is_contiguous():
        raise ValueError(
            f"{name} buffer must be a contiguous 1-D int32 tensor, got {_dtype_name(buf.dtype)} "
            f"shape {tuple(buf.shape)} strides {buf.stride()}"
        )
    if buf.device != device:
        raise ValueError(f"{name} buffer is on {buf.device}, the workspace on {device}")


def _copy_into(dst: torch.Tensor, src: torch.Tensor) -> None:
    if dst.data_ptr() == src.data_ptr() and dst.dtype == src.dtype and dst.shape == src.shape:
        return  # caller filled the buffer in place
    dst.copy_(src, non_blocking=True)


# ----------------------------------------------------------------------------- backend

class _FlashInferPlanModule:
    """Stands in for FlashInfer's compiled MLA module (``wrapper._cached_module``).

    Fast-replay planners call ``wrapper._cached_module.plan(...)`` directly with host index
    arrays instead of ``wrapper.plan`` (e.g. sglang's ``fast_mla_decode_plan`` during CUDA-graph
    replay; FlashInfer 0.7 mirrors this attribute for the same reason). Here it re-plans ETAP with
    the new lengths, keeping the last full plan's page size, scale and dtypes, and the page
    indices already in the wrapper's ``kv_indices`` buffer.
    """

    def __init__(self, backend: "EtapMLABackend") -> None:
        self._backend = backend

    def plan(self, float_workspace_buffer, int_workspace_buffer, pin_memory_int_workspace_buffer,
             qo_indptr, kv_indptr, kv_len_arr, num_heads, head_dim_o, causal, *unused):
        self._backend._replan_lengths(qo_indptr, kv_indptr, kv_len_arr, num_heads, head_dim_o, causal)
        return None


class EtapMLABackend:
    """FlashInfer ``BatchMLAPagedAttentionWrapper`` semantics (0.6.7.post3 API) on ETAP kernels."""

    def __init__(
        self,
        float_workspace_buffer: torch.Tensor,
        use_cuda_graph: bool = False,
        qo_indptr: Optional[torch.Tensor] = None,
        kv_indptr: Optional[torch.Tensor] = None,
        kv_indices: Optional[torch.Tensor] = None,
        kv_len_arr: Optional[torch.Tensor] = None,
        backend: str = "etap",
    ) -> None:
        if backend != "etap":
            raise ValueError(f"EtapMLABackend implements backend='etap', got backend={backend!r}")
        if not isinstance(float_workspace_buffer, torch.Tensor):
            raise TypeError("float_workspace_buffer must be a torch.Tensor")
        self._float_workspace_buffer = float_workspace_buffer
        self.device = float_workspace_buffer.device
        self._backend = "etap"
        self._use_cuda_graph = bool(use_cuda_graph)
        self._qo_indptr_buf = qo_indptr
        self._kv_indptr_buf = kv_indptr
        self._kv_indices_buf = kv_indices
        self._kv_len_arr_buf = kv_len_arr
        if self._use_cuda_graph:
            _check_index_buffer("kv_indptr", kv_indptr, self.device)
            _check_index_buffer("kv_indices", kv_indices, self.device)
            _check_index_buffer("kv_len_arr", kv_len_arr, self.device)
            if qo_indptr is not None:
                _check_index_buffer("qo_indptr", qo_indptr, self.device)
        # FlashInfer-internal names that fast-replay planners touch; ETAP keeps its schedule in
        # its own buffers, so the integer workspaces do not exist.
        self._int_workspace_buffer = None
        self._pin_memory_int_workspace_buffer = None
        self._cached_module = _FlashInferPlanModule(self)
        self._plan: Optional[EtapMLAPlan] = None
        self._kv_indptr_dev: Optional[torch.Tensor] = None
        self._kv_len_dev: Optional[torch.Tensor] = None
        self._kv_indices_dev: Optional[torch.Tensor] = None
        self._metadata: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    # ------------------------------------------------------------------ plan

    def plan(
        self,
        qo_indptr: torch.Tensor,
        kv_indptr: torch.Tensor,
        kv_indices: torch.Tensor,
        kv_len_arr: torch.Tensor,
        num_heads: int,
        head_dim_ckv: int,
        head_dim_kpe: int,
        page_size: int,
        causal: bool,
        sm_scale: float,
        q_data_type: torch.dtype,
        kv_data_type: torch.dtype,
        use_profiler: bool = False,
    ) -> None:
        """FlashInfer's ``plan`` (same arguments). Index tensors may be on the host or the device."""
        plan = plan_mla_decode(
            qo_indptr, kv_indptr, kv_indices, kv_len_arr, num_heads, head_dim_ckv, head_dim_kpe,
            page_size, causal, sm_scale, q_data_type, kv_data_type, use_profiler,
        )
        self._install(plan, qo_indptr, kv_indices)

    def _replan_lengths(self, qo_indptr, kv_indptr, kv_len_arr, num_heads, head_dim_ckv, causal) -> None:
        """Re-plan with new lengths; page indices are those already in the kv_indices buffer."""
        prev = self._plan
        if prev is None or self._kv_indices_dev is None:
            raise RuntimeError("the etap backend needs a full plan() before a fast re-plan")
        plan = plan_mla_decode(
            qo_indptr, kv_indptr, self._kv_indices_dev, kv_len_arr, num_heads, head_dim_ckv,
            HEAD_DIM_KPE, prev.page_size, causal, prev.sm_scale, prev.q_data_type,
            prev.kv_data_type,
        )
        self._install(plan, qo_indptr, None)

    def _check_graph_plan(self, plan: EtapMLAPlan) -> None:
        b = plan.batch_size
        for name, buf, need in (
            ("kv_indptr", self._kv_indptr_buf, b + 1),
            ("kv_len_arr", self._kv_len_arr_buf, b),
            ("kv_indices", self._kv_indices_buf, plan.num_kv_indices),
            ("qo_indptr", self._qo_indptr_buf, b + 1),
        ):
            if buf is not None and buf.numel() < need:
                raise ValueError(
                    f"CUDA-graph mode: the {name} buffer has {buf.numel()} entries, this plan needs {need}"
                )
        prev = self._plan
        if prev is not None and prev.launch_key() != plan.launch_key():
            names = ("batch_size", "qo_len", "num_heads", "page_size", "causal", "sm_scale",
                     "q_data_type", "kv_data_type")
            changed = [
                f"{n} {a!r} -> {c!r}"
                for n, a, c in zip(names, prev.launch_key(), plan.launch_key()) if a != c
            ]
            raise ValueError(
                "CUDA-graph mode: only lengths and page indices may change between plans of one "
                "wrapper (a captured run bakes the rest in); changed: " + ", ".join(changed)
            )

    def _install(self, plan: EtapMLAPlan, qo_indptr, kv_indices) -> None:
        b = plan.batch_size
        if self._use_cuda_graph:
            self._check_graph_plan(plan)
            if self._qo_indptr_buf is not None:
                _copy_into(self._qo_indptr_buf[: b + 1], qo_indptr)
            _copy_into(self._kv_indptr_buf[: b + 1], plan.kv_indptr)
            _copy_into(self._kv_len_arr_buf[:b], plan.kv_len)
            if kv_indices is not None and kv_indices.numel():
                _copy_into(self._kv_indices_buf[: kv_indices.numel()], kv_indices)
            kv_indptr_dev = self._kv_indptr_buf[: b + 1]
            kv_len_dev = self._kv_len_arr_buf[:b]
            kv_indices_dev = self._kv_indices_buf
        else:
            kv_indptr_dev = plan.kv_indptr.to(self.device, non_blocking=True)
            kv_len_dev = plan.kv_len.to(self.device, non_blocking=True)
            if kv_indices is None:
                kv_indices_dev = self._kv_indices_dev
            else:
                kv_indices_dev = kv_indices.to(self.device, non_blocking=True).contiguous()
        get_mla_metadata, _ = _kernels()
        meta, splits = get_mla_metadata(kv_len_dev, plan.qo_len * plan.num_heads, 1)
        if self._use_cuda_graph and self._metadata is not None:
            fixed_meta, fixed_splits = self._metadata
            if fixed_meta.shape != meta.shape or fixed_splits.shape != splits.shape:
                raise RuntimeError(
                    f"CUDA-graph mode: ETAP schedule shape changed from {tuple(fixed_meta.shape)} "
                    f"to {tuple(meta.shape)}"
                )
            fixed_meta.copy_(meta)
            fixed_splits.copy_(splits)
        else:
            # Eager: fresh tensors each plan. Graph mode, first plan: these become the fixed
            # buffers every later plan writes into.
            self._metadata = (meta, splits)
        self._plan = plan
        self._kv_indptr_dev = kv_indptr_dev
        self._kv_len_dev = kv_len_dev
        self._kv_indices_dev = kv_indices_dev

    # ------------------------------------------------------------------ run

    def run(
        self,
        q_nope: torch.Tensor,
        q_pe: torch.Tensor,
        ckv_cache: torch.Tensor,
        kpe_cache: torch.Tensor,
        out: Optional[torch.Tensor] = None,
        lse: Optional[torch.Tensor] = None,
        return_lse: bool = False,
        profiler_buffer: Optional[torch.Tensor] = None,
        kv_len: Optional[torch.Tensor] = None,
        page_table: Optional[torch.Tensor] = None,
        return_lse_base_on_e: bool = False,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """FlashInfer's ``run``. ``kv_len``/``page_table`` are FlashInfer's cutlass-backend
        arguments and are ignored, as FlashInfer's other backends do."""
        plan = self._plan
        if plan is None:
            raise RuntimeError("plan() must be called before run()")
        if profiler_buffer is not None:
            raise ValueError("profiler_buffer is not supported by the etap backend")
        total_q, h = plan.total_q, plan.num_heads
        self._check_run_inputs(plan, q_nope, q_pe, ckv_cache, kpe_cache)
        device = q_nope.device

        if out is None:
            out = torch.empty((total_q, h, HEAD_DIM_CKV), dtype=q_nope.dtype, device=device)
        else:
            _check_shape_dtype_device(out, q_nope.shape, q_nope.dtype, device, "out")
        if return_lse and lse is None:
            lse = torch.empty((total_q, h), dtype=torch.float32, device=device)
        elif lse is not None:
            _check_shape_dtype_device(lse, (total_q, h), torch.float32, device, "lse")

        b, s_q = plan.batch_size, plan.qo_len
        q_nope4 = (q_nope if _vector_friendly(q_nope) else q_nope.contiguous()).unflatten(0, (b, s_q))
        q_pe4 = (q_pe if _vector_friendly(q_pe) else q_pe.contiguous()).unflatten(0, (b, s_q))
        out_direct = _vector_friendly(out)
        out4 = (out if out_direct else torch.empty_like(out, memory_format=torch.contiguous_format))
        out4 = out4.unflatten(0, (b, s_q))
        # [total_q, h] -> [b, s_q, h] -> [b, h, s_q]: always a view, whatever lse's strides.
        lse3 = lse.unflatten(0, (b, s_q)).permute(0, 2, 1) if lse is not None else None

        meta, splits = self._metadata
        _, mla_decode = _kernels()
        mla_decode(
            q_nope4, q_pe4, ckv_cache, kpe_cache, self._kv_len_dev, meta, splits,
            kv_indptr=self._kv_indptr_dev, kv_indices=self._kv_indices_dev,
            softmax_scale=plan.sm_scale, causal=plan.causal, out=out4, lse=lse3,
            **_decode_kwargs(mla_decode),
        )
        if not out_direct:
            out.copy_(out4.flatten(0, 1))
        if lse is not None and not return_lse_base_on_e:
            lse.mul_(LOG2E)
        return (out, lse) if return_lse else out

    def _check_run_inputs(self, plan: EtapMLAPlan, q_nope, q_pe, ckv_cache, kpe_cache) -> None:
        total_q, h, ps = plan.total_q, plan.num_heads, plan.page_size
        for name, t in (("q_nope", q_nope), ("q_pe", q_pe), ("ckv_cache", ckv_cache), ("kpe_cache", kpe_cache)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.dim() != 3:
                raise ValueError(f"{name} must be 3-D, got shape {tuple(t.shape)}")
            if t.device != self.device:
                raise ValueError(f"{name} is on {t.device}, the wrapper's workspace on {self.device}")
        if tuple(q_nope.shape) != (total_q, h, HEAD_DIM_CKV):
            raise ValueError(
                f"q_nope must have shape {(total_q, h, HEAD_DIM_CKV)} (planned batch_size "
                f"{plan.batch_size} x qo_len {plan.qo_len}, num_heads {h}), got {tuple(q_nope.shape)}"
            )
        if tuple(q_pe.shape) != (total_q, h, HEAD_DIM_KPE):
            raise ValueError(f"q_pe must have shape {(total_q, h, HEAD_DIM_KPE)}, got {tuple(q_pe.shape)}")
        num_pages = ckv_cache.shape[0]
        if tuple(ckv_cache.shape[1:]) != (ps, HEAD_DIM_CKV):
            raise ValueError(
                f"ckv_cache must have shape [num_pages, {ps}, {HEAD_DIM_CKV}] (planned page_size {ps}), "
                f"got {tuple(ckv_cache.shape)}"
            )
        if tuple(kpe_cache.shape) != (num_pages, ps, HEAD_DIM_KPE):
            raise ValueError(
                f"kpe_cache must have shape {(num_pages, ps, HEAD_DIM_KPE)}, got {tuple(kpe_cache.shape)}"
            )
        for name, t, want in (
            ("q_nope", q_nope, plan.q_data_type), ("q_pe", q_pe, plan.q_data_type),
            ("ckv_cache", ckv_cache, plan.kv_data_type), ("kpe_cache", kpe_cache, plan.kv_data_type),
        ):
            if t.dtype != want:
                raise TypeError(f"{name} dtype {_dtype_name(t.dtype)} differs from the planned {_dtype_name(want)}")
