"""How the CUDA extension is found or built.

Order: an ahead-of-time build (``etap_kernels._C``, made by ``setup.py`` when a CUDA build of
torch is present at install time), else a just-in-time build with ``torch.utils.cpp_extension``
into a persistent cache (``$ETAP_CACHE_DIR``, default ``~/.cache/etap_kernels``) keyed by the
torch version and a hash of the sources, so it is built once per machine.
CUTLASS/CuTe headers come from the pinned ``nvidia-cutlass`` wheel (``cutlass_library``) or
``$ETAP_CUTLASS_INCLUDE``; nothing of CUTLASS is vendored.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import os
import warnings
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CSRC = PACKAGE_DIR / "csrc"
EXT_NAME = "etap_kernels_C"
BUILD_DONE = "build.done"  # written after a JIT build succeeded, so its module is complete


def kernel_sources() -> list[Path]:
    """The CUDA translation units (compiled without torch headers)."""
    return sorted((CSRC / "sm90").glob("*.cu"))


def all_sources() -> list[Path]:
    return [CSRC / "bindings.cpp", *kernel_sources()]


def cutlass_include() -> str:
    env = os.environ.get("ETAP_CUTLASS_INCLUDE")
    if env:
        return env
    try:
        import cutlass_library  # from the nvidia-cutlass wheel
    except ImportError as exc:
        raise RuntimeError(
            "CUTLASS headers not found: pip install nvidia-cutlass==4.2.0.0 "
            "(or set ETAP_CUTLASS_INCLUDE to a CUTLASS include directory)"
        ) from exc
    path = Path(cutlass_library.__file__).resolve().parent / "source" / "include"
    if not (path / "cute" / "tensor.hpp").exists():
        raise RuntimeError(f"cutlass_library has no CuTe headers at {path}")
    return str(path)


def nvcc_flags() -> list[str]:
    return [
        "-std=c++17",
        "-O3",
        "-gencode=arch=compute_90a,code=sm_90a",
        "--expt-relaxed-constexpr",
        "--use_fast_math",
        "-DNDEBUG",
        *os.environ.get("ETAP_EXTRA_NVCC_FLAGS", "").split(),  # for experiments; part of the cache key
    ]


def host_cflags() -> list[str]:
    """Flags for the torch bindings (host C++). torch >= 2.13 headers require C++20; the kernel
    sources include no torch headers and stay on C++17 with nvcc."""
    try:
        import torch

        major, minor = (int(x) for x in torch.__version__.split(".")[:2])
        std = "-std=c++20" if (major, minor) >= (2, 13) else "-std=c++17"
    except (ImportError, ValueError):
        std = "-std=c++17"
    return ["-O3", std]


def include_dirs() -> list[str]:
    return [str(CSRC), cutlass_include()]


def _source_hash() -> str:
    h = hashlib.sha256()
    for path in sorted(CSRC.rglob("*")):
        if path.is_file():
            h.update(path.name.encode())
            h.update(path.read_bytes())
    h.update(" ".join(nvcc_flags() + host_cflags()).encode())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def load_extension():
    """Returns the compiled module, building it on first use if needed."""
    try:
        return importlib.import_module("etap_kernels._C")
    except ImportError:
        pass
    import torch
    from torch.utils import cpp_extension

    if not torch.cuda.is_available():
        raise RuntimeError("ETAP kernels need a CUDA GPU (sm_90a: H100/H200/H20)")
    cache_root = Path(os.environ.get("ETAP_CACHE_DIR", Path.home() / ".cache" / "etap_kernels"))
    tag = f"torch{torch.__version__.replace('+', '_')}-{_source_hash()}"
    build_dir = cache_root / tag
    build_dir.mkdir(parents=True, exist_ok=True)
    # A finished build is imported directly: cpp_extension.load takes a lock file on every call, and
    # one left by a process killed during that call makes every later import wait forever.
    done = build_dir / BUILD_DONE
    if done.exists():
        return _import_built(build_dir / f"{EXT_NAME}.so")
    lock = build_dir / "lock"
    if lock.exists():
        warnings.warn(f"waiting for {lock}: another process is building the ETAP kernels; "
                      "if none is, delete the file", stacklevel=2)
    module = cpp_extension.load(
        name=EXT_NAME,
        sources=[str(s) for s in all_sources()],
        extra_include_paths=include_dirs(),
        extra_cflags=host_cflags(),
        extra_cuda_cflags=nvcc_flags(),
        build_directory=str(build_dir),
        verbose=bool(os.environ.get("ETAP_BUILD_VERBOSE")),
    )
    done.touch()
    return module


def _import_built(path: Path):
    spec = importlib.util.spec_from_file_location(EXT_NAME, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
