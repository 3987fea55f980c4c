"""Shared test setup.

* ``@pytest.mark.gpu`` marks a test that needs a CUDA GPU and the compiled extension. Such a test
  is skipped (with the reason) when ``torch.cuda.is_available()`` is false, or when the
  extension cannot be built or loaded. Set ``ETAP_REQUIRE_GPU=1`` to turn those skips into
  failures (on a GPU machine, so a broken build cannot hide behind a skip).
* Every test starts from a seed derived from its node id (``torch``, ``random``, ``numpy``),
  so results do not depend on test order; the ``seed`` fixture returns it and
  ``make_generator(seed)`` gives an independent ``torch.Generator``.
"""

from __future__ import annotations

import functools
import os
import random
import zlib

import pytest
import torch

try:
    import numpy as np
except ImportError:  # numpy is a dependency, but the tests should not need it
    np = None


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (sm_90a) and the compiled ETAP extension")


@functools.lru_cache(maxsize=None)
def _gpu_unavailable_reason():
    """None when GPU tests can run, else why not (computed once per session)."""
    if not torch.cuda.is_available():
        return "no CUDA GPU available"
    try:
        from etap_kernels import _build

        _build.load_extension()
    except Exception as exc:  # noqa: BLE001 - any build/load failure skips (or fails, see below)
        return f"ETAP extension cannot be built/loaded: {type(exc).__name__}: {exc}"
    return None


def pytest_runtest_setup(item):
    if item.get_closest_marker("gpu") is None:
        return
    reason = _gpu_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("ETAP_REQUIRE_GPU", "") not in ("", "0"):
        pytest.fail(f"ETAP_REQUIRE_GPU is set but {reason}", pytrace=False)
    pytest.skip(reason)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if np is not None:
        np.random.seed(seed % 2**32)


def make_generator(seed: int, device="cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


@pytest.fixture
def seed(request) -> int:
    """A stable per-test seed (CRC32 of the test's node id)."""
    return zlib.crc32(request.node.nodeid.encode())


@pytest.fixture(autouse=True)
def _seeded(seed):
    seed_everything(seed)
    yield
