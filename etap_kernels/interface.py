"""Python API of the ETAP decode kernels.

``get_mla_metadata`` and ``flash_mla_with_kvcache`` take FlashMLA's arguments and shapes, so a
FlashMLA user switches by changing an import. ``mla_decode`` is the lower-level entry for split
latent/rope caches (``ckv``/``kpe``, possibly strided views of one 576-wide buffer) addressed by
a block table or by FlashInfer-style page indices.

Every entry validates its inputs and raises ``TypeError``/``ValueError`` naming the argument.
``lse`` is returned in natural-log units (FlashMLA's convention), shape ``[b, h_q, s_q]``.

FP8 KV cache: a ``torch.float8_e4m3fn`` cache (with a per-tensor ``kv_scale``) is read as such.
Scores are e4m3 WGMMAs against each bf16 query row split into two e4m3 parts (hi + lo / 16, a
per-row scale: about 7 significant bits, more than an e4m3 query's 4); V is converted to fp16 in
registers for the output GEMM; P is fp16, accumulation fp32. FlashMLA's FP8 entry (e4m3 ``q``
with ``descale_q``) is accepted by ``flash_mla_with_kvcache``; such ``q`` is widened to bf16
exactly.
"""

from __future__ import annotations

import math
import os
from typing import Optional, Tuple

import torch

from ._build import load_extension
from .scheduler import ROWS_PER_CTA, fixed_cost_tiles, num_row_groups

HEAD_DIM_QK = 576
HEAD_DIM_V = 512
HEAD_DIM_ROPE = HEAD_DIM_QK - HEAD_DIM_V
TILE_KV = 64
# Groups of at most this many rows run "KV split": one warpgroup's N covers every row, and the two
# consumer warpgroups take alternate KV tiles, so twice the tiles are in flight per SM. Worth it
# where a tile's math chain is long next to its load time (e4m3 tiles are half the bytes).
# Measured on the H200 (2026-11-29, b = 16, 64K, h_q = 16): with TMA tiles (page size >= 8) 16 rows
# are 5-6% faster split over the two warpgroups' N = 8 than KV split at N = 16; with cp.async
# tiles (page sizes 1, 2, 4 and those that neither divide nor are multiples of 64) KV split is
# 13% faster (page size 1: 350 -> 301 us). ETAP_KV_SPLIT_MAX_ROWS[_FP8]
# override them per call (read when a call is made or captured).
KV_SPLIT_MAX_ROWS = 8
KV_SPLIT_MAX_ROWS_SMALL_PAGES = 16
KV_SPLIT_MAX_ROWS_FP8 = 16


def kv_split_max_rows(fp8: bool, page_size: int = TILE_KV) -> int:
    if fp8:
        name, default = "ETAP_KV_SPLIT_MAX_ROWS_FP8", KV_SPLIT_MAX_ROWS_FP8
    else:
        # whole tiles by bulk tensor copies (as bindings.cpp decides) or by cp.async
        bulk = page_size >= 8 and (page_size % TILE_KV == 0 or TILE_KV % page_size == 0)
        name, default = "ETAP_KV_SPLIT_MAX_ROWS", KV_SPLIT_MAX_ROWS if bulk else KV_SPLIT_MAX_ROWS_SMALL_PAGES
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        rows = int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer (rows), got {value!r}") from None
    # An e4m3 KV split keeps all of V^T in each warpgroup's registers: 16 rows at most.
    return min(rows, KV_SPLIT_MAX_ROWS_FP8) if fp8 else rows


META_INTS = 8

# Value checks that read device memory (lengths vs page-table capacity) cost a host sync; they
# run by default in eager mode and never while a CUDA graph is being captured. The kernel is
# memory-safe without them: it clamps lengths to the table and zero-fills invalid page ids.
VALIDATE_VALUES = True

_DTYPES = (torch.bfloat16, torch.float16)
FP8 = torch.float8_e4m3fn


def _scale_tensor(name: str, scale, device: torch.device) -> Optional[torch.Tensor]:
    """A float or a one-element float32 tensor on ``device`` (None = 1). Tensors are read on the
    GPU at run time, so a CUDA graph replays with the current value. ``device=None``: checks only."""
    if scale is None:
        return None
    if isinstance(scale, torch.Tensor):
        if scale.dtype != torch.float32 or scale.numel() != 1:
            raise TypeError(f"{name} must be a float or a one-element float32 tensor, got "
                            f"{str(scale.dtype).replace('torch.', '')} of shape {tuple(scale.shape)}")
        if device is not None and scale.device != device:
            raise ValueError(f"{name} is on {scale.device}, expected {device}")
        return scale.reshape(1)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"{name} must be a float or a one-element float32 tensor, got {type(scale).__name__}")
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {scale}")
    if device is None:
        return None
    return torch.full((1,), float(scale), dtype=torch.float32, device=device)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def row_grouping(rows: int, fp8: bool = False, page_size: int = TILE_KV) -> Tuple[int, int, int]:
    """(num_groups, rows_per_group, rows_per_warpgroup) for ``rows`` = s_q * h_q query rows.

    A CTA serves up to 64 rows split over two consumer warpgroups; each warpgroup's WGMMA N is
    its row count rounded up to a multiple of 8 (8..32). Small groups run KV split
    (``rows_per_warpgroup >= rows_per_group``): both warpgroups hold all the rows. With an FP8
    cache each warpgroup then keeps all of V^T in registers, so FP8 KV split stops at 16 rows.
    """
    groups = num_row_groups(rows, fp8)
    per_group = _cdiv(rows, groups)
    if per_group <= kv_split_max_rows(fp8, page_size):
        per_wg = 8 * _cdiv(per_group, 8)
    else:
        per_wg = 8 * _cdiv(_cdiv(per_group, 2), 8)
    return groups, per_group, per_wg


def num_sm_parts(rows: int, device: torch.device, fp8: bool = False) -> int:
    groups, _, _ = row_grouping(rows, fp8)
    return max(1, _sm_count(device) // groups)


_SM_COUNT = {}


def _sm_count(device: torch.device) -> int:
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SM_COUNT:
        _SM_COUNT[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SM_COUNT[index]


# ----------------------------------------------------------------------------- validation

def _tensor(name: str, t, *, dtypes=None, dim=None) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if dtypes is not None and t.dtype not in dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} must have dtype {allowed}, got {str(t.dtype).replace('torch.', '')}")
    if dim is not None and t.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimensions, got shape {tuple(t.shape)}")
    return t


def _same_device(device: torch.device, first: str = "q_nope", **tensors) -> None:
    """``device`` is the device of the argument named ``first``; the others must share it."""
    if device.type != "cuda":
        raise ValueError(f"{first} is on {device}: ETAP runs on a CUDA device")
    for name, t in tensors.items():
        if t is not None and t.device != device:
            raise ValueError(f"{name} is on {t.device}, expected {device}")


def _vector_aligned(name: str, t: torch.Tensor, inner: int) -> None:
    """Last dim contiguous, other strides and the base 16-byte aligned (cp.async/uint4 access)."""
    if t.stride(-1) != 1 and t.shape[-1] > 1:
        raise ValueError(f"{name} must be contiguous in its last dimension, strides {t.stride()}")
    per16 = 16 // t.element_size()
    for d in range(t.dim() - 1):
        if t.shape[d] > 1 and t.stride(d) % per16 != 0:
            raise ValueError(
                f"{name} stride {t.stride(d)} of dim {d} must be a multiple of {per16} elements (16 bytes)"
            )
    if t.data_ptr() % 16 != 0:
        raise ValueError(f"{name} must start at a 16-byte aligned address")
    if t.shape[-1] != inner:
        raise ValueError(f"{name} last dimension must be {inner}, got {t.shape[-1]}")


def _int32_vector(name: str, t, length: Optional[int] = None) -> torch.Tensor:
    _tensor(name, t, dtypes=(torch.int32,), dim=1)
    if length is not None and t.shape[0] != length:
        raise ValueError(f"{name} must have {length} entries, got {t.shape[0]}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous")
    return t


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


# ----------------------------------------------------------------------------- metadata

def get_mla_metadata(
    cache_seqlens: torch.Tensor, num_q_tokens_per_head_k: int, num_heads_k: int, is_fp8_kvcache: bool = False
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Split-KV schedule for a decode step (FlashMLA's signature).

    Returns ``(tile_scheduler_metadata int32 [num_sm_parts, 8], num_splits int32 [b + 1])``,
    computed on the GPU from ``cache_seqlens`` without a host synchronisation, so the call can be
    captured in a CUDA graph and replayed with new lengths. Compute it once per decode step and
    pass it to every layer. ``num_q_tokens_per_head_k`` is ``s_q * h_q // h_k``; set
    ``is_fp8_kvcache`` (FlashMLA's name) for an e4m3 cache, whose CTAs serve fewer rows. A schedule
    made for the other cache type stays correct, it only fills the GPU less evenly.
    """
    _int32_vector("cache_seqlens", cache_seqlens)
    if isinstance(num_heads_k, bool) or not isinstance(num_heads_k, int):
        raise TypeError(f"num_heads_k must be an int, got {type(num_heads_k).__name__}")
    if num_heads_k != 1:
        raise ValueError(f"num_heads_k must be 1 (MLA has one latent KV head), got {num_heads_k}")
    if isinstance(num_q_tokens_per_head_k, bool) or not isinstance(num_q_tokens_per_head_k, int):
        raise TypeError("num_q_tokens_per_head_k must be an int")
    if num_q_tokens_per_head_k < 1:
        raise ValueError(f"num_q_tokens_per_head_k must be >= 1, got {num_q_tokens_per_head_k}")
    if cache_seqlens.shape[0] < 1:
        raise ValueError("cache_seqlens must hold at least one sequence")
    _same_device(cache_seqlens.device, "cache_seqlens")
    if not isinstance(is_fp8_kvcache, bool):
        raise TypeError("is_fp8_kvcache must be a bool")
    parts = num_sm_parts(num_q_tokens_per_head_k * num_heads_k, cache_seqlens.device, is_fp8_kvcache)
    meta, num_splits = load_extension().get_metadata(cache_seqlens, parts, fixed_cost_tiles(is_fp8_kvcache))
    return meta, num_splits


# ----------------------------------------------------------------------------- decode

def mla_decode(
    q_nope: torch.Tensor,
    q_rope: torch.Tensor,
    ckv_cache: torch.Tensor,
    kpe_cache: torch.Tensor,
    cache_seqlens: torch.Tensor,
    tile_scheduler_metadata: torch.Tensor,
    num_splits: torch.Tensor,
    *,
    block_table: Optional[torch.Tensor] = None,
    kv_indptr: Optional[torch.Tensor] = None,
    kv_indices: Optional[torch.Tensor] = None,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    out: Optional[torch.Tensor] = None,
    lse: Optional[torch.Tensor] = None,
    validate_values: Optional[bool] = None,
    kv_scale=None,
    q_scale=None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """MLA decode over split latent/rope paged caches. Returns ``(out, lse)``.

    q_nope [b, s_q, h_q, 512], q_rope [b, s_q, h_q, 64]; ckv_cache [num_pages, page_size, 512],
    kpe_cache [num_pages, page_size, 64] (views of one [.., 576] buffer are fine); pages of
    sequence i are ``block_table[i, :]`` or ``kv_indices[kv_indptr[i]:kv_indptr[i + 1]]``.
    ``out`` [b, s_q, h_q, 512] and ``lse`` float32 [b, h_q, s_q] (natural log) are written in
    place when given (any strides with a contiguous last dim for ``out``).
    With ``causal`` and s_q > 1, query token t sees KV positions < len - (s_q - 1 - t).

    An e4m3 cache (``torch.float8_e4m3fn``, both parts) needs bf16 queries; values are the cache
    bytes times ``kv_scale`` (float or one-element float32 tensor; default 1), and scores also
    carry ``q_scale`` (for queries that were quantised; default 1).
    """
    _tensor("q_nope", q_nope, dtypes=_DTYPES, dim=4)
    dtype = q_nope.dtype
    _tensor("q_rope", q_rope, dim=4)
    _tensor("ckv_cache", ckv_cache, dim=3)
    _tensor("kpe_cache", kpe_cache, dim=3)
    if q_rope.dtype != dtype:
        raise TypeError(f"q_rope dtype {q_rope.dtype} differs from q_nope dtype {dtype}")
    fp8 = ckv_cache.dtype == FP8
    if ckv_cache.dtype == torch.uint8:
        raise TypeError("ckv_cache is uint8: view an e4m3 cache as torch.float8_e4m3fn (cache.view(torch.float8_e4m3fn))")
    if fp8 and dtype != torch.bfloat16:
        raise TypeError(f"an e4m3 cache needs bf16 queries, got q_nope dtype {dtype}")
    for name, t in (("ckv_cache", ckv_cache), ("kpe_cache", kpe_cache)):
        if t.dtype != (FP8 if fp8 else dtype):
            raise TypeError(f"{name} dtype {t.dtype} must be q_nope's dtype {dtype} or, for both cache parts, float8_e4m3fn")
    if not fp8 and (kv_scale is not None or q_scale is not None):
        raise ValueError("kv_scale and q_scale apply to an e4m3 (float8_e4m3fn) cache only")
    _scale_tensor("kv_scale", kv_scale, None)
    _scale_tensor("q_scale", q_scale, None)
    device = q_nope.device

    b, s_q, h_q, d_nope = q_nope.shape
    if d_nope != HEAD_DIM_V:
        raise ValueError(f"q_nope head dim must be {HEAD_DIM_V}, got {d_nope}")
    if tuple(q_rope.shape) != (b, s_q, h_q, HEAD_DIM_ROPE):
        raise ValueError(f"q_rope must have shape {(b, s_q, h_q, HEAD_DIM_ROPE)}, got {tuple(q_rope.shape)}")
    if b < 1 or s_q < 1 or h_q < 1:
        raise ValueError(f"q_nope shape {tuple(q_nope.shape)} must have b, s_q, h_q >= 1")
    num_pages, page_size, d_ckv = ckv_cache.shape
    if d_ckv != HEAD_DIM_V:
        raise ValueError(f"ckv_cache head dim must be {HEAD_DIM_V}, got {d_ckv}")
    if tuple(kpe_cache.shape) != (num_pages, page_size, HEAD_DIM_ROPE):
        raise ValueError(
            f"kpe_cache must have shape {(num_pages, page_size, HEAD_DIM_ROPE)}, got {tuple(kpe_cache.shape)}"
        )
    if num_pages < 1 or page_size < 1:
        raise ValueError(f"ckv_cache must hold at least one page of size >= 1, got {tuple(ckv_cache.shape)}")
    if num_pages >= 2**31:
        raise ValueError("ckv_cache has too many pages for int32 page ids")
    _vector_aligned("q_nope", q_nope, HEAD_DIM_V)
    _vector_aligned("q_rope", q_rope, HEAD_DIM_ROPE)
    _vector_aligned("ckv_cache", ckv_cache, HEAD_DIM_V)
    _vector_aligned("kpe_cache", kpe_cache, HEAD_DIM_ROPE)

    _int32_vector("cache_seqlens", cache_seqlens, b)
    if (block_table is None) == (kv_indptr is None and kv_indices is None):
        raise ValueError("pass exactly one of block_table or (kv_indptr, kv_indices)")
    if block_table is not None:
        _tensor("block_table", block_table, dtypes=(torch.int32,), dim=2)
        if block_table.shape[0] != b:
            raise ValueError(f"block_table must have {b} rows, got {block_table.shape[0]}")
        if block_table.shape[1] < 1:
            raise ValueError("block_table must have at least one column")
        if block_table.stride(1) != 1:
            raise ValueError("block_table rows must be contiguous")
        page_table, page_indptr = block_table, None
    else:
        if kv_indptr is None or kv_indices is None:
            raise ValueError("kv_indptr and kv_indices must be passed together")
        _int32_vector("kv_indptr", kv_indptr, b + 1)
        _int32_vector("kv_indices", kv_indices)
        page_table, page_indptr = kv_indices, kv_indptr

    _tensor("tile_scheduler_metadata", tile_scheduler_metadata, dtypes=(torch.int32,), dim=2)
    if tile_scheduler_metadata.shape[1] != META_INTS or not tile_scheduler_metadata.is_contiguous():
        raise ValueError(f"tile_scheduler_metadata must be a contiguous [num_sm_parts, {META_INTS}] tensor")
    if tile_scheduler_metadata.shape[0] < 1:
        raise ValueError("tile_scheduler_metadata must have at least one part")
    _int32_vector("num_splits", num_splits, b + 1)

    if softmax_scale is None:
        softmax_scale = HEAD_DIM_QK ** -0.5
    if isinstance(softmax_scale, bool) or not isinstance(softmax_scale, (int, float)):
        raise TypeError(f"softmax_scale must be a float, got {type(softmax_scale).__name__}")
    if not math.isfinite(softmax_scale) or softmax_scale <= 0:
        raise ValueError(f"softmax_scale must be finite and > 0, got {softmax_scale}")
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")

    if out is not None:
        _tensor("out", out, dim=4)
        if out.dtype != dtype:
            raise TypeError(f"out dtype {out.dtype} must equal q dtype {dtype}")
        if tuple(out.shape) != (b, s_q, h_q, HEAD_DIM_V):
            raise ValueError(f"out must have shape {(b, s_q, h_q, HEAD_DIM_V)}, got {tuple(out.shape)}")
        _vector_aligned("out", out, HEAD_DIM_V)
    if lse is not None:
        _tensor("lse", lse, dtypes=(torch.float32,), dim=3)
        if tuple(lse.shape) != (b, h_q, s_q):
            raise ValueError(f"lse must have shape {(b, h_q, s_q)}, got {tuple(lse.shape)}")

    # Device placement last, so every structural check above also runs on CPU tensors in tests.
    _same_device(
        device, q_rope=q_rope, ckv_cache=ckv_cache, kpe_cache=kpe_cache, cache_seqlens=cache_seqlens,
        tile_scheduler_metadata=tile_scheduler_metadata, num_splits=num_splits,
        block_table=block_table, kv_indptr=kv_indptr, kv_indices=kv_indices, out=out, lse=lse,
    )
    kv_scale_t = _scale_tensor("kv_scale", kv_scale, device)
    q_scale_t = _scale_tensor("q_scale", q_scale, device)
    if validate_values is None:
        validate_values = VALIDATE_VALUES
    if validate_values and not _capturing():
        _check_values(cache_seqlens, page_size, num_pages, block_table, kv_indptr, kv_indices)

    if out is None:
        out = torch.empty((b, s_q, h_q, HEAD_DIM_V), dtype=dtype, device=device)
    if lse is None:
        lse = torch.empty((b, h_q, s_q), dtype=torch.float32, device=device)
    if page_table.numel() == 0:  # keep a valid pointer; every sequence then has length 0
        page_table = torch.zeros(1, dtype=torch.int32, device=device)
    groups, per_group, per_wg = row_grouping(s_q * h_q, fp8, page_size)
    parts = tile_scheduler_metadata.shape[0]
    o_accum = torch.empty((2 * parts, groups, ROWS_PER_CTA, HEAD_DIM_V), dtype=torch.float32, device=device)
    lse_accum = torch.empty((2 * parts, groups, ROWS_PER_CTA), dtype=torch.float32, device=device)
    load_extension().decode(
        q_nope, q_rope, ckv_cache, kpe_cache, cache_seqlens, page_table, page_indptr,
        tile_scheduler_metadata, num_splits, out, lse, o_accum, lse_accum,
        per_group, groups, per_wg, float(softmax_scale), causal, q_scale_t, kv_scale_t,
    )
    return out, lse


def _check_values(cache_seqlens, page_size, num_pages, block_table, kv_indptr, kv_indices) -> None:
    """Lengths vs page-table capacity and the page ids in use (one host synchronisation)."""
    lens = cache_seqlens.to(torch.int64)
    if block_table is not None:
        cap = torch.full_like(lens, block_table.shape[1] * page_size)
    else:
        indptr = kv_indptr.to(torch.int64)
        pages = indptr[1:] - indptr[:-1]
        if bool((pages < 0).any()) or int(indptr[-1]) > kv_indices.numel() or int(indptr[0]) < 0:
            raise ValueError("kv_indptr must be non-decreasing, start >= 0 and end <= len(kv_indices)")
        cap = pages * page_size
    bad = (lens < 0) | (lens > cap)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"cache_seqlens[{i}] = {int(lens[i])} is negative or exceeds the page table's capacity "
            f"of {int(cap[i])} tokens"
        )
    if block_table is not None:
        used = torch.arange(block_table.shape[1], device=lens.device)[None, :] < (-(-lens // page_size))[:, None]
        ids, name = block_table[used], "block_table"
    else:
        ids, name = kv_indices[int(indptr[0]):int(indptr[-1])], "kv_indices"
    if ids.numel() and bool(((ids < 0) | (ids >= num_pages)).any()):
        raise ValueError(f"{name} holds page ids outside [0, {num_pages}) for pages in use")


def flash_mla_with_kvcache(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    block_table: torch.Tensor,
    cache_seqlens: torch.Tensor,
    head_dim_v: int,
    tile_scheduler_metadata: torch.Tensor,
    num_splits: torch.Tensor,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    descale_q=None,
    descale_k=None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """FlashMLA-compatible decode: q [b, s_q, h_q, 576], k_cache [num_pages, page_size, 1, 576].

    Returns ``(out [b, s_q, h_q, 512], softmax_lse float32 [b, h_q, s_q])``, lse in natural log.
    FP8 as FlashMLA's FP8 entry: an e4m3 ``k_cache`` with ``descale_k``, and ``q`` either bf16 or
    e4m3 with ``descale_q`` (float or one-element float32 tensor); the output is bf16.
    """
    _tensor("q", q, dtypes=_DTYPES + (FP8,), dim=4)
    _tensor("k_cache", k_cache, dim=4)
    if q.shape[-1] != HEAD_DIM_QK:
        raise ValueError(f"q head dim must be {HEAD_DIM_QK}, got {q.shape[-1]}")
    if k_cache.shape[-1] != HEAD_DIM_QK:
        raise ValueError(f"k_cache head dim must be {HEAD_DIM_QK}, got {k_cache.shape[-1]}")
    if k_cache.shape[2] != 1:
        raise ValueError(f"k_cache must have one KV head (MLA), got {k_cache.shape[2]}")
    if q.dtype == FP8:
        if k_cache.dtype != FP8:
            raise TypeError("an e4m3 q needs an e4m3 k_cache")
        q = q.to(torch.bfloat16)  # exact
    elif descale_q is not None:
        raise ValueError("descale_q applies to an e4m3 q only")
    if k_cache.dtype != FP8 and k_cache.dtype != q.dtype:
        raise TypeError(f"k_cache dtype {k_cache.dtype} differs from q dtype {q.dtype}")
    if isinstance(head_dim_v, bool) or not isinstance(head_dim_v, int):
        raise TypeError("head_dim_v must be an int")
    if head_dim_v != HEAD_DIM_V:
        raise ValueError(f"head_dim_v must be {HEAD_DIM_V}, got {head_dim_v}")
    if softmax_scale is None:
        softmax_scale = q.shape[-1] ** -0.5
    cache = k_cache[:, :, 0, :]
    return mla_decode(
        q[..., :HEAD_DIM_V], q[..., HEAD_DIM_V:], cache[..., :HEAD_DIM_V], cache[..., HEAD_DIM_V:],
        cache_seqlens, tile_scheduler_metadata, num_splits, block_table=block_table,
        softmax_scale=softmax_scale, causal=causal, kv_scale=descale_k, q_scale=descale_q,
    )
