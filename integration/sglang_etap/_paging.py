"""Plain-torch helpers shared by the ETAP SGLang backend (no SGLang, no GPU needed).

SGLang's MLA KV pool (``MLATokenToKVPool``) keeps one buffer per layer of shape
``[num_slots, 1, 576]`` (``kv_lora_rank`` 512 + ``qk_rope_head_dim`` 64). With ``--page-size P``
the token allocator hands out whole pages: the slots of page ``k`` are ``k*P .. k*P + P - 1`` and
token ``j`` of a request lives in slot ``req_to_token[r, j]``, so the page of the request's
``p``-th page is ``req_to_token[r, p*P] // P`` (the same rule as SGLang's
``create_flashmla_kv_indices_triton``). ``num_slots`` is a multiple of ``P`` (SGLang rounds the
pool size down to whole pages and adds one page of padding).

Everything here is written so that it also runs on CPU tensors, which is how the CPU tests
exercise it.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

HEAD_DIM_CKV = 512
HEAD_DIM_KPE = 64
HEAD_DIM_QK = HEAD_DIM_CKV + HEAD_DIM_KPE


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_pow2(n: int) -> int:
    n = max(int(n), 1)
    return 1 << (n - 1).bit_length()


def triton_page_size_ok(page_size: int) -> bool:
    """SGLang's ``create_flashmla_kv_indices_triton`` needs ``4096 // page_size`` to be a power of
    two (``tl.arange``), i.e. a power-of-two page size of at most 4096."""
    return 1 <= page_size <= 4096 and (page_size & (page_size - 1)) == 0


def eager_table_width(max_tokens: int, page_size: int) -> int:
    """Width of a freshly allocated (non-CUDA-graph) block table for sequences of up to
    ``max_tokens`` tokens: the page count rounded up to a power of two (at least 16), so the
    Triton builder, whose row stride is a compile-time constant, compiles only a handful of
    variants."""
    return max(16, next_pow2(cdiv(max(int(max_tokens), 1), page_size)))


def graph_table_width(max_context_len: int, extra_tokens: int, page_size: int) -> int:
    """Width of the CUDA-graph block table: enough pages for the longest sequence the runner can
    replay (context length plus speculative tokens) plus one spare page."""
    return cdiv(int(max_context_len) + max(int(extra_tokens), 0) + 1, page_size) + 1


def split_latent_cache(kv_buffer: torch.Tensor, page_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``[num_slots, 1, 576]`` (or ``[num_slots, 576]``) -> ``(ckv [n_pages, P, 512],
    kpe [n_pages, P, 64])``, both strided views of the same storage (no copy)."""
    if kv_buffer.shape[-1] != HEAD_DIM_QK:
        raise ValueError(f"MLA KV buffer last dim must be {HEAD_DIM_QK}, got {tuple(kv_buffer.shape)}")
    flat = kv_buffer.reshape(-1, HEAD_DIM_QK) if kv_buffer.dim() != 2 else kv_buffer
    if flat.stride(-1) != 1 or (flat.shape[0] > 1 and flat.stride(0) != HEAD_DIM_QK):
        raise ValueError(f"MLA KV buffer must be contiguous, strides {tuple(kv_buffer.stride())}")
    n_pages = flat.shape[0] // page_size
    if n_pages < 1:
        raise ValueError(f"MLA KV buffer of {flat.shape[0]} slots holds no page of size {page_size}")
    paged = flat[: n_pages * page_size].view(n_pages, page_size, HEAD_DIM_QK)
    return paged[..., :HEAD_DIM_CKV], paged[..., HEAD_DIM_CKV:]


_ARANGE_CACHE = {}


def _page_starts(n: int, page_size: int, limit: int, device: torch.device) -> torch.Tensor:
    key = (n, page_size, limit, str(device))
    cols = _ARANGE_CACHE.get(key)
    if cols is None:
        cols = (torch.arange(n, device=device, dtype=torch.int64) * page_size).clamp_(max=limit - 1)
        _ARANGE_CACHE[key] = cols
    return cols


def fill_block_table_torch(
    req_to_token: torch.Tensor,
    req_pool_indices: torch.Tensor,
    page_size: int,
    out: torch.Tensor,
    num_pages: Optional[int] = None,
) -> torch.Tensor:
    """Write ``out[i, p] = req_to_token[req_pool_indices[i], p * page_size] // page_size`` for
    ``p < num_pages`` (default: all of ``out``'s columns). Pure torch, fixed shapes and no host
    synchronisation, so it works for any page size (the Triton builder needs a power of two).
    Entries past a sequence's length are harmless garbage: the kernel reads only the first
    ``cdiv(len, page_size)`` pages of a row."""
    bs = req_pool_indices.shape[0]
    if num_pages is None:
        num_pages = out.shape[1]
    cols = _page_starts(num_pages, page_size, req_to_token.shape[1], req_to_token.device)
    rows = req_pool_indices.to(torch.int64).unsqueeze(1)
    first_slots = req_to_token[rows, cols.unsqueeze(0)]
    out[:bs, :num_pages].copy_(torch.div(first_slots, page_size, rounding_mode="floor"))
    return out


def vector_aligned(t: torch.Tensor) -> bool:
    """True when ``t`` already satisfies the ETAP kernel's access rules: last dim contiguous,
    every other stride a multiple of 16 bytes and a 16-byte aligned base."""
    per16 = 16 // t.element_size()
    if t.stride(-1) != 1 and t.shape[-1] > 1:
        return False
    for d in range(t.dim() - 1):
        if t.shape[d] > 1 and t.stride(d) % per16 != 0:
            return False
    return t.data_ptr() % 16 == 0


def as_aligned(t: torch.Tensor) -> torch.Tensor:
    return t if vector_aligned(t) else t.contiguous()
