"""Compile check without a GPU: every kernel source with nvcc for sm_90a (the flags of the real
build), and the torch bindings with the host compiler (syntax only; a CPU build of torch will
do). Exits non-zero on the first error. Used by CI (.ci/run)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "etap_kernels"))
import _build  # noqa: E402  (standalone: the package itself needs torch)


# Known register spills (bytes stored) that are accepted until fixed; any other spill, or more
# than this, fails the check (the largest of a source's kernels counts). e4m3 N = 16: its KV-split
# kernel, whose V^T fragments fill the registers; N = 32 (dims split) holds two words over.
# (16-bit N = 32's heads-on-M kernel spilled 44 B until its P stores stopped computing 64-bit
# generic addresses.)
KNOWN_SPILL_BYTES = {"decode_e4m3_n16.cu": 24, "decode_e4m3_n32.cu": 8}


def spill_bytes(log: str) -> int:
    return max((int(m) for m in re.findall(r"(\d+) bytes spill stores", log)), default=0)


# ptxas falls back to running every WGMMA of a kernel one at a time when it cannot bound a
# pipeline stage (C7514 / C7520, e.g. a wait whose group count depends on runtime control flow);
# measured 15-20% slower once (NOTES.md, session 8), so it fails the check like a new spill.
SERIALISED = "wgmma.mma_async instructions are serialized"


def wgmma_serialised(log: str) -> bool:
    return SERIALISED in log


def nvcc() -> str:
    for cand in (os.environ.get("NVCC"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if cand and Path(cand).exists():
            return cand
    sys.exit("nvcc not found: install the CUDA toolkit (nvcc 12.4+ for sm_90a)")


# The diagnostics build (scripts/trace_case.py) compiled too, on one 16-bit and one e4m3 instance,
# so it cannot rot unnoticed; its spills do not count, serialised WGMMAs do (a printf in the
# kernel once made every WGMMA of the traced kernel wait, C7510). 16-bit N = 32 holds both
# 16-bit forms.
TRACE_SOURCES = ("decode_bf16_n32.cu", "decode_e4m3_n16.cu")


def compile_one(src: Path, out_dir: Path, extra: tuple = ()) -> tuple[Path, int, str, float]:
    t0 = time.time()
    cmd = [nvcc(), *_build.nvcc_flags(), *extra, *(f"-I{d}" for d in _build.include_dirs()),
           "-c", str(src), "-o", str(out_dir / (src.stem + "".join(extra) + ".o")), "-Xptxas", "-warn-spills"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return src, proc.returncode, proc.stdout + proc.stderr, time.time() - t0


def bindings_cmd(shim_dir: Path):
    """g++ -fsyntax-only of bindings.cpp, or None without torch's c10 CUDA headers or the CUDA
    toolkit's. A CPU build of torch ships c10's CUDA headers but not their generated config
    header (c10/cuda/impl/cuda_cmake_macros.h); a stand-in with its one macro goes in shim_dir."""
    try:
        import torch.utils.cpp_extension as ext
    except ImportError:
        return None
    includes = list(ext.include_paths())
    macros = Path("c10") / "cuda" / "impl" / "cuda_cmake_macros.h"
    if not any((Path(p) / macros).exists() for p in includes):
        (shim_dir / macros).parent.mkdir(parents=True, exist_ok=True)
        (shim_dir / macros).write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
        includes.append(str(shim_dir))
    if not any((Path(p) / "c10" / "cuda" / "CUDAStream.h").exists() for p in includes):
        return None
    cuda_inc = next((p for p in (Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include",
                                 Path(nvcc()).resolve().parent.parent / "include")
                     if (p / "cuda_runtime_api.h").exists() and (p / "cudaTypedefs.h").exists()), None)
    if cuda_inc is None:
        return None
    return ["g++", *_build.host_cflags(), "-fsyntax-only", "-DTORCH_EXTENSION_NAME=etap_kernels_C",
            *(f"-I{p}" for p in includes), f"-I{cuda_inc}", f"-I{sysconfig.get_paths()['include']}",
            f"-I{_build.CSRC}", str(_build.CSRC / "bindings.cpp")]


def main() -> int:
    sources = _build.kernel_sources()
    jobs = int(os.environ.get("MAX_JOBS", os.cpu_count() or 1))
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp)
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for src, rc, log, secs in pool.map(lambda s: compile_one(s, out_dir), sources):
                spilled = spill_bytes(log)
                status = "ok" if rc == 0 and spilled <= KNOWN_SPILL_BYTES.get(src.name, 0) else "FAILED"
                if wgmma_serialised(log):
                    status = "FAILED"
                    print(f"note   {src.name}: ptxas serialised WGMMAs ({SERIALISED})")
                if status == "ok" and spilled:
                    print(f"note   {src.name}: {spilled} bytes spilled (known, allowed up to "
                          f"{KNOWN_SPILL_BYTES[src.name]})")
                print(f"{status:6s} {src.relative_to(ROOT)} ({secs:.0f} s)", flush=True)
                if status != "ok":
                    failed += 1
                    print(log)
            trace = [src for src in sources if src.name in TRACE_SOURCES]
            for src, rc, log, secs in pool.map(lambda s: compile_one(s, out_dir, ("-DETAP_TRACE",)), trace):
                # A serialised trace build would time a different kernel than the shipped one.
                ok = rc == 0 and not wgmma_serialised(log)
                print(f"{'ok' if ok else 'FAILED':6s} {src.relative_to(ROOT)} -DETAP_TRACE ({secs:.0f} s)", flush=True)
                if not ok:
                    failed += 1
                    print(log)
            # The objects of one build are linked into one library: a symbol defined in two of
            # them (a non-static kernel or __device__ variable in a header) fails here too.
            for extra, group in (((), sources), (("-DETAP_TRACE",), trace)):
                objs = [out_dir / (src.stem + "".join(extra) + ".o") for src in group]
                if len(objs) > 1 and all(o.exists() for o in objs):
                    proc = subprocess.run(["ld", "-r", "-o", str(out_dir / f"link{''.join(extra)}.o"), *map(str, objs)],
                                          capture_output=True, text=True)
                    what = f"link of the {len(objs)} {'trace ' if extra else ''}kernel objects (ld -r)"
                    print(f"{'ok' if proc.returncode == 0 else 'FAILED':6s} {what}")
                    if proc.returncode != 0:
                        failed += 1
                        print(proc.stdout + proc.stderr)
        cmd = bindings_cmd(out_dir / "shim")
        if cmd is None:
            print("skip   etap_kernels/csrc/bindings.cpp (needs torch's and the CUDA toolkit's headers)")
        else:
            proc = subprocess.run(cmd, capture_output=True, text=True)
            print(f"{'ok' if proc.returncode == 0 else 'FAILED':6s} etap_kernels/csrc/bindings.cpp (syntax)")
            if proc.returncode != 0:
                failed += 1
                print(proc.stdout + proc.stderr)
    total = len(sources) + len(TRACE_SOURCES) + 3  # + the two link checks and the bindings
    print(f"compile check: {'all sources compiled' if not failed else f'{failed} of {total} sources FAILED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
