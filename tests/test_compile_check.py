"""The compile check's log parsing (scripts/compile_kernels.py): spills and serialised WGMMAs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load():
    spec = importlib.util.spec_from_file_location("compile_kernels", ROOT / "scripts" / "compile_kernels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ptxas lines as nvcc 13.0 prints them (function names shortened)
SERIALISED_LOG = (
    "ptxas info    : (C7514) Potential Performance Loss: wgmma.mma_async instructions are serialized due to "
    "non wgmma instructions reading accumulator registers of  a wgmma between start and end of the pipeline "
    "stage in the function '_ZN4etap4sm9013decode_kernel'\n")
INJECTED_LOG = (
    "ptxas info    : (C7517) warpgroup.wait is injected in around line 3229 by compiler to allow use of "
    "registers defined by GMMA in function '_ZN4etap4sm9013decode_kernel'\n"
    "ptxas warning : Registers are spilled to local memory in function '_ZN4etap4sm9013decode_kernel', "
    "44 bytes spill stores, 44 bytes spill loads\n")


def test_serialised_wgmma_is_detected():
    ck = _load()
    assert ck.wgmma_serialised(SERIALISED_LOG)
    assert not ck.wgmma_serialised(INJECTED_LOG)  # an injected wait alone is allowed


def test_spill_bytes_takes_the_largest():
    ck = _load()
    assert ck.spill_bytes(INJECTED_LOG) == 44
    assert ck.spill_bytes(INJECTED_LOG + INJECTED_LOG.replace("44 bytes spill stores", "8 bytes spill stores")) == 44
    assert ck.spill_bytes("") == 0


def test_known_spills_name_existing_sources():
    ck = _load()
    names = {p.name for p in (ROOT / "etap_kernels" / "csrc" / "sm90").glob("*.cu")}
    assert set(ck.KNOWN_SPILL_BYTES) <= names
    assert set(ck.TRACE_SOURCES) <= names
