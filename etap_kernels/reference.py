"""Float64 PyTorch reference for MLA decode (the ground truth of the tests).

Runs on whatever device the inputs are on, one batch entry at a time (vectorised over its tokens,
heads and KV positions), so it also serves long sequences on a GPU.

Semantics (API_CONTRACT.md): one latent KV head; K row = [ckv (512) | kpe (64)], V = ckv.
Page ``p`` of sequence ``i`` is ``block_table[i, p]`` or ``kv_indices[kv_indptr[i] + p]``; only
the first ``cdiv(len_i, page_size)`` pages are read. With ``causal`` and ``s_q > 1``, query token
``t`` (0-based among the ``s_q`` new tokens) sees KV positions ``< len - (s_q - 1 - t)``
(FlashMLA's definition; the last token sees all ``len`` positions). A query row that sees no KV
position (length 0, or masked out by ``causal``) gets ``out = 0`` and ``lse = -inf``, never NaN.
``lse = log(sum_j exp(softmax_scale * q . k_j))`` in natural log, shape ``[b, h_q, s_q]``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

HEAD_DIM_QK = 576
HEAD_DIM_V = 512
HEAD_DIM_ROPE = HEAD_DIM_QK - HEAD_DIM_V

__all__ = ["mla_decode_reference", "flash_mla_reference"]


def _page_ids(i: int, num_needed: int, block_table, indptr, kv_indices) -> torch.Tensor:
    """The first ``num_needed`` page ids of sequence ``i`` (int64, on the table's device).

    ``indptr`` is ``kv_indptr`` as a Python list (``None`` with a block table)."""
    if block_table is not None:
        if num_needed > block_table.shape[1]:
            raise ValueError(
                f"block_table has {block_table.shape[1]} columns, sequence {i} needs {num_needed} pages"
            )
        return block_table[i, :num_needed].long()
    start, stop = indptr[i], indptr[i + 1]
    if stop - start < num_needed or start < 0 or stop > kv_indices.numel():
        raise ValueError(
            f"kv_indptr[{i}:{i + 2}] = [{start}, {stop}] gives too few pages (sequence {i} needs "
            f"{num_needed}) or lies outside kv_indices ({kv_indices.numel()} entries)"
        )
    return kv_indices[start:start + num_needed].long()


def _gather(cache: torch.Tensor, pages: torch.Tensor, width: int, length: int) -> torch.Tensor:
    """The first ``length`` rows of the given pages; 1-byte (e4m3) caches are gathered as bytes."""
    if cache.element_size() == 1 and cache.dtype != torch.uint8:
        return cache.view(torch.uint8)[pages].view(cache.dtype).reshape(-1, width)[:length]
    return cache[pages].reshape(-1, width)[:length]


def mla_decode_reference(
    q_nope: torch.Tensor,
    q_rope: torch.Tensor,
    ckv_cache: torch.Tensor,
    kpe_cache: torch.Tensor,
    cache_seqlens: torch.Tensor,
    block_table: Optional[torch.Tensor] = None,
    kv_indptr: Optional[torch.Tensor] = None,
    kv_indices: Optional[torch.Tensor] = None,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    kv_scale: float = 1.0,
    q_scale: float = 1.0,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Returns ``(out float64 [b, s_q, h_q, 512], lse float64 [b, h_q, s_q])`` (natural log).

    FP8 (e4m3) caches and queries are dequantised exactly: cache values times ``kv_scale``,
    query values times ``q_scale``.

    q_nope [b, s_q, h_q, 512], q_rope [b, s_q, h_q, 64], ckv_cache [num_pages, page_size, 512],
    kpe_cache [num_pages, page_size, 64] (any strides, e.g. views of one 576-wide buffer),
    cache_seqlens [b]; exactly one of ``block_table`` [b, max_pages] or
    (``kv_indptr`` [b + 1], ``kv_indices`` [nnz]). ``softmax_scale`` defaults to ``576 ** -0.5``.
    """
    if q_nope.dim() != 4 or q_nope.shape[-1] != HEAD_DIM_V:
        raise ValueError(f"q_nope must be [b, s_q, h_q, {HEAD_DIM_V}], got {tuple(q_nope.shape)}")
    b, s_q, h_q, _ = q_nope.shape
    if tuple(q_rope.shape) != (b, s_q, h_q, HEAD_DIM_ROPE):
        raise ValueError(f"q_rope must be {(b, s_q, h_q, HEAD_DIM_ROPE)}, got {tuple(q_rope.shape)}")
    if ckv_cache.dim() != 3 or ckv_cache.shape[-1] != HEAD_DIM_V:
        raise ValueError(f"ckv_cache must be [num_pages, page_size, {HEAD_DIM_V}], got {tuple(ckv_cache.shape)}")
    num_pages, page_size, _ = ckv_cache.shape
    if tuple(kpe_cache.shape) != (num_pages, page_size, HEAD_DIM_ROPE):
        raise ValueError(
            f"kpe_cache must be {(num_pages, page_size, HEAD_DIM_ROPE)}, got {tuple(kpe_cache.shape)}"
        )
    if cache_seqlens.dim() != 1 or cache_seqlens.shape[0] != b:
        raise ValueError(f"cache_seqlens must be [{b}], got {tuple(cache_seqlens.shape)}")
    if (block_table is None) == (kv_indptr is None and kv_indices is None):
        raise ValueError("pass exactly one of block_table or (kv_indptr, kv_indices)")
    if block_table is None and (kv_indptr is None or kv_indices is None):
        raise ValueError("kv_indptr and kv_indices must be passed together")
    if softmax_scale is None:
        softmax_scale = HEAD_DIM_QK ** -0.5

    device = q_nope.device
    f64 = torch.float64
    out = torch.zeros((b, s_q, h_q, HEAD_DIM_V), dtype=f64, device=device)
    lse = torch.full((b, h_q, s_q), float("-inf"), dtype=f64, device=device)
    lens = [int(x) for x in cache_seqlens.tolist()]
    indptr = None
    if block_table is None:
        if kv_indptr.dim() != 1 or kv_indptr.shape[0] != b + 1:
            raise ValueError(f"kv_indptr must be [{b + 1}], got {tuple(kv_indptr.shape)}")
        indptr = [int(x) for x in kv_indptr.tolist()]
    elif block_table.dim() != 2 or block_table.shape[0] != b:
        raise ValueError(f"block_table must be [{b}, max_pages], got {tuple(block_table.shape)}")
    for i, length in enumerate(lens):
        if length < 0:
            raise ValueError(f"cache_seqlens[{i}] = {length} is negative")
        if length == 0:
            continue
        pages = _page_ids(i, -(-length // page_size), block_table, indptr, kv_indices).to(ckv_cache.device)
        if bool(((pages < 0) | (pages >= num_pages)).any()):  # a negative id would wrap around
            raise ValueError(f"sequence {i} uses a page id outside [0, {num_pages})")
        ckv = _gather(ckv_cache, pages, HEAD_DIM_V, length).to(device=device, dtype=f64) * kv_scale
        kpe = _gather(kpe_cache, pages, HEAD_DIM_ROPE, length).to(device=device, dtype=f64) * kv_scale
        qn = q_nope[i].to(f64) * q_scale  # [s_q, h_q, 512]
        qr = q_rope[i].to(f64) * q_scale  # [s_q, h_q, 64]
        scores = (qn @ ckv.T + qr @ kpe.T) * softmax_scale  # [s_q, h_q, L]
        if causal and s_q > 1:
            limit = length - (s_q - 1) + torch.arange(s_q, device=device)  # token t sees pos < limit[t]
            visible = torch.arange(length, device=device)[None, :] < limit[:, None]  # [s_q, L]
            scores = scores.masked_fill(~visible[:, None, :], float("-inf"))
        row_lse = torch.logsumexp(scores, dim=-1)  # [s_q, h_q]; -inf where nothing is visible
        finite = torch.isfinite(row_lse)
        probs = torch.exp(scores - torch.where(finite, row_lse, torch.zeros_like(row_lse))[..., None])
        out[i] = probs @ ckv  # rows with nothing visible: exp(-inf) = 0 -> out 0
        lse[i] = row_lse.T
    return out, lse


def flash_mla_reference(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    block_table: torch.Tensor,
    cache_seqlens: torch.Tensor,
    head_dim_v: int = HEAD_DIM_V,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    kv_scale: float = 1.0,
    q_scale: float = 1.0,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """FlashMLA layout: q [b, s_q, h_q, 576], k_cache [num_pages, page_size, 1, 576].

    Returns ``(out float64 [b, s_q, h_q, 512], lse float64 [b, h_q, s_q])`` (natural log);
    ``softmax_scale`` defaults to ``576 ** -0.5``.
    """
    if head_dim_v != HEAD_DIM_V:
        raise ValueError(f"head_dim_v must be {HEAD_DIM_V}, got {head_dim_v}")
    if q.dim() != 4 or q.shape[-1] != HEAD_DIM_QK:
        raise ValueError(f"q must be [b, s_q, h_q, {HEAD_DIM_QK}], got {tuple(q.shape)}")
    if k_cache.dim() != 4 or k_cache.shape[2] != 1 or k_cache.shape[-1] != HEAD_DIM_QK:
        raise ValueError(f"k_cache must be [num_pages, page_size, 1, {HEAD_DIM_QK}], got {tuple(k_cache.shape)}")
    cache = k_cache[:, :, 0, :]
    return mla_decode_reference(
        q[..., :HEAD_DIM_V], q[..., HEAD_DIM_V:], cache[..., :HEAD_DIM_V], cache[..., HEAD_DIM_V:],
        cache_seqlens, block_table=block_table, softmax_scale=softmax_scale, causal=causal,
        kv_scale=kv_scale, q_scale=q_scale,
    )
