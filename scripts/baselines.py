"""Peers measured beside ETAP, loaded from wheels carried to the GPU machine (nothing of their
source is in this repository). See README "Baselines" for how the files are brought over.

FlashMLA: `sgl_kernel/flashmla_ops.abi3.so` from the sglang-kernel==0.4.6 wheel, loaded with
torch.ops.load_library (it registers torch.ops.sgl_kernel.*). Default path: $ETAP_FLASHMLA_SO or
.baselines/flashmla_ops.abi3.so in the repository root.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def ensure_integration_importable() -> None:
    """`etap_integration` from the checkout when the project is not pip-installed (GPU machines
    that only have the working tree on PYTHONPATH)."""
    import importlib
    import sys

    try:
        importlib.import_module("etap_integration")
    except ImportError:
        sys.path.insert(0, str(ROOT))
        sys.modules["etap_integration"] = importlib.import_module("integration")


def flashmla_so() -> Path | None:
    path = Path(os.environ.get("ETAP_FLASHMLA_SO", ROOT / ".baselines" / "flashmla_ops.abi3.so"))
    return path if path.exists() else None


_LOADED = False


def load_flashmla():
    """Returns decode(q, k_cache, block_table, cache_seqlens, causal, scale) -> (out, lse), or None."""
    global _LOADED
    path = flashmla_so()
    if path is None or not torch.cuda.is_available():
        return None
    if not _LOADED:
        torch.ops.load_library(str(path))
        _LOADED = True
    ops = torch.ops.sgl_kernel

    def metadata(cache_seqlens, s_q, h_q):
        return ops.get_mla_decoding_metadata(cache_seqlens, s_q * h_q, 1, h_q, False, None)

    def decode(q, k_cache, block_table, cache_seqlens, causal=False, scale=None, meta=None):
        b, s_q, h_q, d = q.shape
        if scale is None:
            scale = d ** -0.5
        if meta is None:
            meta = metadata(cache_seqlens, s_q, h_q)
        sched, splits = meta[0], meta[1]
        res = ops.fwd_kvcache_mla(q, k_cache, 512, cache_seqlens, block_table, scale, causal, sched,
                                  splits, False, None, None, None, None, None, None)
        return res[0], res[1]

    decode.metadata = metadata
    return decode


def load_flashmla_fp8():
    """FlashMLA's dense FP8 path: decode(q_fp8, k_cache_fp8, block_table, cache_seqlens, descale_q,
    descale_k, causal, scale, meta) -> (out bf16, lse), or None. descale_* are float32 (1,)."""
    if load_flashmla() is None:
        return None
    ops = torch.ops.sgl_kernel

    def metadata(cache_seqlens, s_q, h_q):
        return ops.get_mla_decoding_metadata_dense_fp8(cache_seqlens, s_q * h_q, 1)

    def decode(q, k_cache, block_table, cache_seqlens, descale_q, descale_k, causal=False, scale=None,
               meta=None):
        b, s_q, h_q, d = q.shape
        if scale is None:
            scale = d ** -0.5
        if meta is None:
            meta = metadata(cache_seqlens, s_q, h_q)
        res = ops.fwd_kvcache_mla_fp8(q, k_cache, 512, cache_seqlens, block_table, scale, causal, meta[0],
                                      meta[1], descale_q, descale_k)
        return res[0], res[1]

    decode.metadata = metadata
    return decode
