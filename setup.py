"""Build hook: compiles the CUDA extension ahead of time when a CUDA build of torch, nvcc and
the CUTLASS headers are all present at install time (use `pip install --no-build-isolation`
so the build sees your torch). Otherwise the package installs as pure Python and the
extension is built on first use into a persistent cache (see etap_kernels/_build.py).
Set ETAP_SKIP_BUILD=1 to skip the ahead-of-time build."""

import os
import sys
from pathlib import Path

from setuptools import setup

sys.path.insert(0, str(Path(__file__).resolve().parent / "etap_kernels"))


def _cuda_extension():
    if os.environ.get("ETAP_SKIP_BUILD"):
        return None
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
    except ImportError:
        return None
    if torch.version.cuda is None or CUDA_HOME is None:
        return None
    import _build  # etap_kernels/_build.py, imported standalone (the package needs torch)

    try:
        includes = _build.include_dirs()
    except RuntimeError as exc:
        print(f"etap_kernels: skipping the ahead-of-time build: {exc}")
        return None
    root = Path(__file__).resolve().parent
    ext = CUDAExtension(
        name="etap_kernels._C",
        sources=[str(p.relative_to(root)) for p in _build.all_sources()],
        include_dirs=includes,
        extra_compile_args={"cxx": _build.host_cflags(), "nvcc": _build.nvcc_flags()},
    )
    return ext, BuildExtension


_built = _cuda_extension()
if _built:
    setup(ext_modules=[_built[0]], cmdclass={"build_ext": _built[1]})
else:
    setup()
