"""ETAP: transposed MLA decode kernels for Hopper (sm_90a).

FlashMLA-compatible entry points (``get_mla_metadata``, ``flash_mla_with_kvcache``), the
lower-level ``mla_decode`` for split ckv/kpe caches, and a float64 reference in
``etap_kernels.reference``. The CUDA extension is loaded (or built) on first use.
"""

from .interface import (
    flash_mla_with_kvcache,
    get_mla_metadata,
    mla_decode,
    num_sm_parts,
    row_grouping,
)

__all__ = [
    "flash_mla_with_kvcache",
    "get_mla_metadata",
    "mla_decode",
    "num_sm_parts",
    "row_grouping",
]
__version__ = "0.1.0"
