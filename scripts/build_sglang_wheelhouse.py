#!/usr/bin/env python3
"""Build the wheelhouse that brings sglang==0.5.10.post1 onto the GPU image (no internet there).

The image (Python 3.12, manylinux x86_64) already has torch 2.11.0+cu130, triton, the nvidia-*
CUDA libraries and the packages listed in IMAGE_PACKAGES (from the device notes, "Python
packages already there"). This script, run where PyPI is reachable:

1. downloads the sglang wheel and reads its requirements (markers evaluated for Linux x86_64,
   Python 3.12, no extras);
2. drops what must not travel: torch and its ABI-bound companions (torchaudio, torchvision,
   torchcodec), triton, nvidia-*, cuda-python (the image has cuda-bindings 13), sglang-kernel
   (handled in step 5) and every package the image already has;
3. runs pip's resolver for the target (``pip install --dry-run --ignore-installed --report``
   with ``--python-version 3.12 --platform manylinux... --only-binary=:all:``), with the image's
   known versions as constraints, and drops the same names from the resolved closure;
4. downloads exactly the resolved versions (``pip download --no-deps``);
5. downloads sglang-kernel 0.4.6 (built for torch 2.11) and rebuilds it trimmed: without
   ``flash_ops*.so`` (1.1 GB, FA3), ``infllm_ops*``, ``sm100/`` and ``triton_kernels/``, plus a
   small compat module: sglang 0.5.10.post1 was written against sglang-kernel 0.4.1 and imports
   ``bmm_fp8``, ``dsv3_fused_a_gemm``, ``dsv3_router_gemm``, ``fp8_blockwise_scaled_mm`` and the
   ``sgl_kernel::moe_fused_gate`` op at module level, which 0.4.6 no longer has; the compat module
   defines them in plain torch (slow but exact; the bf16 DeepSeek decode path does not call them
   except ``moe_fused_gate`` for MoE routing) so that the DeepSeek model imports;
6. adds nvidia-cutlass 4.2.0.0 (ETAP's own build needs its headers) to the first batch and
   splits the wheels into as few balanced batches of at most ``--batch-mib`` MiB (default 60) under
   ``--dest`` (default ``.whl/sglang``; ``.whl/`` is git-ignored) and writes ``manifest.json``.

Install on the device (see integration/README_sglang.md): copy every batch's wheels into one
folder, then ``python3 -m pip install --no-index --no-deps --no-compile --target /tmp/site
/tmp/etap_wheels/*.whl`` once, and ``python3 scripts/apply_sglang_patch.py --site-dir /tmp/site``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SGLANG = "sglang==0.5.10.post1"
SGLANG_KERNEL = "sglang-kernel==0.4.6"
CUTLASS = "nvidia-cutlass==4.2.0.0"
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64",
             "manylinux_2_31_x86_64", "manylinux_2_34_x86_64", "manylinux_2_35_x86_64", "linux_x86_64"]

# /work/.library/device/KINDS.md, "Python packages already there" (read 2026-11-17).
IMAGE_PACKAGES = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings
cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils
execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet
httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax
jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning
lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib
mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver
nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13
nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx
optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout
pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools
shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server
tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq
torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions
typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split()

# Versions seen on the image (KINDS.md pip list); used as resolver constraints.
IMAGE_VERSIONS = {
    "accelerate": "1.15.0", "huggingface-hub": "1.33.0", "numpy": "2.5.2", "safetensors": "0.8.0",
    "sentencepiece": "0.2.2", "tiktoken": "0.14.0", "tokenizers": "0.23.2", "torch": "2.11.0",
    "transformers": "5.17.0", "triton": "3.6.0", "torchaudio": "2.11.0", "torchvision": "0.26.0",
}

# Left out unless --keep names them: flashinfer-cubin (281 MiB of precompiled kernels, mostly
# Blackwell trtllm-gen); without it FlashInfer JIT-compiles what Hopper needs with the image's nvcc.
DEFAULT_EXCLUDED = {"flashinfer-cubin"}

# nvidia-* packages that are plain Python front-ends, not CUDA libraries: shipped.
NVIDIA_PYTHON_ONLY = {"nvidia-cudnn-frontend"}

ALWAYS_EXCLUDED = {"torch", "torchaudio", "torchvision", "torchcodec", "triton", "sglang-kernel",
                   "cuda-python", "cuda-bindings", "sglang"}

TRIM_PATTERNS = [r"^sgl_kernel/flash_ops[^/]*\.so$", r"^sgl_kernel/infllm_ops[^/]*\.so$",
                 r"^sgl_kernel/sm100/", r"^triton_kernels/"]

COMPAT_MODULE = "_etap_compat_sglang_0510"
COMPAT_SOURCE = '''"""Backfill of sglang-kernel 0.4.1 names that sglang 0.5.10.post1 imports but 0.4.6 dropped.

Added by ETAP's scripts/build_sglang_wheelhouse.py to its trimmed sglang-kernel 0.4.6 wheel. Plain
torch implementations (exact, not fast); each is only installed when sgl_kernel lacks it.
"""

import torch

__all__ = ["bmm_fp8", "dsv3_fused_a_gemm", "dsv3_router_gemm", "fp8_blockwise_scaled_mm", "moe_fused_gate"]


def bmm_fp8(A, B, A_scale, B_scale, dtype, out=None):
    res = (torch.bmm(A.float(), B.float()) * (A_scale.float() * B_scale.float())).to(dtype)
    if out is not None:
        out.copy_(res)
        return out
    return res


def dsv3_fused_a_gemm(mat_a, mat_b, output=None):
    res = torch.matmul(mat_a, mat_b)
    if output is not None:
        output.copy_(res)
        return output
    return res


def dsv3_router_gemm(hidden_states, router_weights, out_dtype=torch.bfloat16):
    return torch.matmul(hidden_states.float(), router_weights.float().t()).to(out_dtype)


def fp8_blockwise_scaled_mm(mat_a, mat_b, scales_a, scales_b, out_dtype):
    m, k = mat_a.shape
    n = mat_b.shape[1]
    ba = -(-k // scales_a.shape[1])
    bk, bn = -(-k // scales_b.shape[0]), -(-n // scales_b.shape[1])
    a = mat_a.float() * scales_a.float().repeat_interleave(ba, dim=1)[:, :k]
    sb = scales_b.float().repeat_interleave(bk, dim=0)[:k].repeat_interleave(bn, dim=1)[:, :n]
    return torch.matmul(a, mat_b.float() * sb).to(out_dtype)


def _moe_fused_gate_impl(input, bias, num_expert_group, topk_group, topk, num_fused_shared_experts,
                         routed_scaling_factor, apply_routed_scaling_factor_on_output):
    scores = input.float().sigmoid()
    n, e = scores.shape
    choice = scores + bias.float().unsqueeze(0)
    routed = topk - num_fused_shared_experts
    group_scores = choice.view(n, num_expert_group, -1).topk(2, dim=-1)[0].sum(dim=-1)
    group_idx = torch.topk(group_scores, k=topk_group, dim=-1, sorted=False)[1]
    group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
    score_mask = group_mask.unsqueeze(-1).expand(n, num_expert_group, e // num_expert_group).reshape(n, -1)
    ids = torch.topk(choice.masked_fill(~score_mask.bool(), float("-inf")), k=routed, dim=-1, sorted=True)[1]
    weights = scores.gather(1, ids)
    weights = weights / weights.sum(dim=-1, keepdim=True)
    if apply_routed_scaling_factor_on_output:
        weights = weights * routed_scaling_factor
    if num_fused_shared_experts > 0:
        shared_w = torch.full((n, num_fused_shared_experts), 1.0 / (routed_scaling_factor or 1.0),
                              dtype=weights.dtype, device=weights.device)
        if apply_routed_scaling_factor_on_output:
            shared_w = shared_w * routed_scaling_factor
        shared_ids = (e + torch.arange(num_fused_shared_experts, device=ids.device)).expand(n, -1)
        weights = torch.cat([weights, shared_w], dim=1)
        ids = torch.cat([ids, shared_ids.to(ids.dtype)], dim=1)
    return [weights.float().contiguous(), ids.to(torch.int32).contiguous()]


_lib = None


def _define_ops():
    global _lib
    try:
        torch.ops.sgl_kernel.moe_fused_gate
        return
    except (AttributeError, RuntimeError):
        pass
    _lib = torch.library.Library("sgl_kernel", "FRAGMENT")
    _lib.define("moe_fused_gate(Tensor input, Tensor bias, int num_expert_group, int topk_group, int topk, "
                "int num_fused_shared_experts, float routed_scaling_factor, "
                "bool apply_routed_scaling_factor_on_output) -> Tensor[]")
    _lib.impl("moe_fused_gate", _moe_fused_gate_impl, "CompositeExplicitAutograd")


_define_ops()


def moe_fused_gate(input_tensor, bias, num_expert_group, topk_group, topk, num_fused_shared_experts=0,
                   routed_scaling_factor=0, apply_routed_scaling_factor_on_output=False):
    return torch.ops.sgl_kernel.moe_fused_gate.default(
        input_tensor, bias, num_expert_group, topk_group, topk, num_fused_shared_experts,
        float(routed_scaling_factor), apply_routed_scaling_factor_on_output)


def _unavailable(name):
    def stub(*args, **kwargs):
        raise NotImplementedError(f"{name} is not in sglang-kernel 0.4.6 (quantized/other-model paths only)")
    stub.__name__ = name
    return stub


# Imported at module level by sglang 0.5.10.post1 (found on the device with an ast scan of
# sglang/srt for `from sgl_kernel import ...`), used only by paths the bf16 DeepSeek check never runs.
for _name in ("fused_experts", "gelu_quick", "kimi_k2_moe_fused_gate", "qserve_w4a8_per_chn_gemm",
              "qserve_w4a8_per_group_gemm", "spatial"):
    globals()[_name] = _unavailable(_name)
    __all__.append(_name)
'''

COMPAT_HOOK = f'''

# --- added by ETAP's build_sglang_wheelhouse.py (sglang 0.5.10.post1 compatibility) ---
try:
    from sgl_kernel import {COMPAT_MODULE} as _etap_compat

    for _etap_name in _etap_compat.__all__:
        if _etap_name not in globals():
            globals()[_etap_name] = getattr(_etap_compat, _etap_name)
except Exception as _etap_exc:  # pragma: no cover
    import warnings as _etap_warnings

    _etap_warnings.warn(f"sgl_kernel ETAP compat shim failed: {{_etap_exc}}")
'''


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pip(python: str, *args: str, capture=False) -> subprocess.CompletedProcess:
    cmd = [python, "-m", "pip", "--disable-pip-version-check", *args]
    print("+", " ".join(cmd[:12]), "..." if len(cmd) > 12 else "", flush=True)
    return subprocess.run(cmd, check=True, text=True, capture_output=capture)


def target_flags(python_version: str):
    flags = ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp"]
    for p in PLATFORMS:
        flags += ["--platform", p]
    return flags


def wheel_requirements(wheel: Path):
    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(meta).decode()
    env = {"sys_platform": "linux", "platform_machine": "x86_64", "platform_system": "Linux",
           "os_name": "posix", "python_version": "3.12", "python_full_version": "3.12.3",
           "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
    reqs = []
    for line in text.splitlines():
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is None or req.marker.evaluate(env):
                reqs.append(req)
    return reqs


def trim_sglang_kernel(src: Path, dest_dir: Path) -> Path:
    """Rebuild the wheel without the big/unused binaries, with the compat module, new RECORD."""
    out = dest_dir / src.name.replace("-cp310-abi3-", "-cp310-abi3-").replace(".whl", ".whl")
    patterns = [re.compile(p) for p in TRIM_PATTERNS]
    records = []
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        record_name = next(n for n in zin.namelist() if n.endswith(".dist-info/RECORD"))
        for info in zin.infolist():
            name = info.filename
            if name == record_name or any(p.search(name) for p in patterns):
                continue
            data = zin.read(name)
            if name == "sgl_kernel/__init__.py":
                data += COMPAT_HOOK.encode()
            zout.writestr(info, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append(f"{name},sha256={digest},{len(data)}")
        compat = f"sgl_kernel/{COMPAT_MODULE}.py"
        data = COMPAT_SOURCE.encode()
        zout.writestr(compat, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        records.append(f"{compat},sha256={digest},{len(data)}")
        records.append(f"{record_name},,")
        zout.writestr(record_name, "\n".join(records) + "\n")
    return out


def pack_fa3(full_wheel: Path, dest: Path, part_bytes: int) -> dict:
    """FlashAttention-3 (``sgl_kernel/flash_ops.abi3.so``, 1.07 GB, left out of the trimmed wheel)
    as xz-compressed parts of at most ``part_bytes`` each under ``dest/fa3``, for the FA3 MLA
    baseline of scripts/bench_decode.py. Reassemble on the device with scripts/unpack_fa3.py."""
    out_dir = dest / "fa3"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    raw = out_dir / "flash_ops.abi3.so"
    with zipfile.ZipFile(full_wheel) as z, z.open("sgl_kernel/flash_ops.abi3.so") as src, open(raw, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 24)
    sha = hashlib.sha256(raw.read_bytes()).hexdigest()
    xz = out_dir / "flash_ops.abi3.so.xz"
    if shutil.which("xz"):
        subprocess.run(["xz", "-6", "-T0", "-f", "-k", str(raw)], check=True)
    else:
        import lzma

        with open(raw, "rb") as src, lzma.open(xz, "wb", preset=6) as dst:
            shutil.copyfileobj(src, dst, 1 << 24)
    size = raw.stat().st_size
    raw.unlink()
    parts = []
    with open(xz, "rb") as f:
        while chunk := f.read(part_bytes):
            part = out_dir / f"flash_ops.abi3.so.xz.part{len(parts):02d}"
            part.write_bytes(chunk)
            parts.append(part.name)
    xz.unlink()
    info = {"file": "sgl_kernel/flash_ops.abi3.so", "bytes": size, "sha256": sha, "parts": parts,
            "source": full_wheel.name}
    (out_dir / "fa3.json").write_text(json.dumps(info, indent=1))
    return info


# Stand-ins for the image's torch family during resolution: a requirement on torch must be met by
# the image's torch 2.11.0, not by PyPI's wheel (whose CUDA pins, e.g. nvidia-nccl-cu13==2.28.9,
# are not all on PyPI and would drag the resolution elsewhere). A local version label sorts above
# the real release, so "torch==2.11.0" picks the stub and its (empty) requirements.
STUBS = {"torch": "2.11.0", "torchvision": "0.26.0", "torchaudio": "2.11.0", "triton": "3.6.0"}


def make_stub_wheel(dest: Path, name: str, version: str) -> Path:
    dist = f"{name.replace('-', '_')}-{version}+etapstub"
    path = dest / f"{dist}-py3-none-any.whl"
    files = {
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}+etapstub\n",
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: etap\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(path, "w") as zf:
        for n, text in files.items():
            zf.writestr(n, text)
        zf.writestr(f"{dist}.dist-info/RECORD", "".join(f"{n},,\n" for n in files) + f"{dist}.dist-info/RECORD,,\n")
    return path


def split_batches(wheels, dest: Path, batch_bytes: int, first=()):
    """As few batches as first-fit-decreasing needs, balanced (each wheel to the least-filled
    batch) so that every transfer leaves room beside the working tree; ``first`` goes into batch 1
    (what the first device call needs early, e.g. the CUTLASS headers to start the ETAP build).
    A wheel larger than a batch is cut into ``.partNN`` pieces (``cat NAME.whl.part* > NAME.whl``)."""
    for old in dest.glob("batch-*"):
        shutil.rmtree(old)
    parts_dir = dest / "parts"
    shutil.rmtree(parts_dir, ignore_errors=True)
    items = []
    for w in wheels:
        size = w.stat().st_size
        if size <= batch_bytes:
            items.append(w)
            continue
        parts_dir.mkdir(exist_ok=True)
        with open(w, "rb") as f:
            k = 0
            while chunk := f.read(batch_bytes):
                part = parts_dir / f"{w.name}.part{k:02d}"
                part.write_bytes(chunk)
                items.append(part)
                k += 1
    def ffd(count=None):
        batches = [list(first)] + ([[] for _ in range(count - 1)] if count else [])
        sizes = [sum(w.stat().st_size for w in first)] + ([0] * (count - 1) if count else [])
        for w in sorted((i for i in items if i not in first), key=lambda p: -p.stat().st_size):
            size = w.stat().st_size
            if count:  # balanced: the least-filled batch
                i = min(range(count), key=lambda k: sizes[k])
                if sizes[i] + size > batch_bytes:
                    return None
            else:
                i = next((k for k, used in enumerate(sizes) if used + size <= batch_bytes), None)
                if i is None:
                    batches.append([])
                    sizes.append(0)
                    i = len(sizes) - 1
            batches[i].append(w)
            sizes[i] += size
        return batches, sizes

    batches, sizes = ffd()
    batches, sizes = ffd(len(batches)) or (batches, sizes)
    out = []
    for i, ws in enumerate(batches, 1):
        bdir = dest / f"batch-{i:02d}"
        bdir.mkdir(parents=True)
        for w in ws:
            shutil.copy2(w, bdir / w.name)
        out.append({"dir": bdir.name, "mib": round(sizes[i - 1] / 2**20, 2), "wheels": sorted(w.name for w in ws)})
    return out


def find_python312() -> str:
    for cand in ("python3.12", os.path.expanduser("~/.pyenv/versions/3.12.1/bin/python")):
        path = shutil.which(cand) or (cand if os.path.exists(cand) else None)
        if path:
            try:
                out = subprocess.run([path, "-c", "import sys; print(sys.version_info[:2])"],
                                     capture_output=True, text=True, timeout=30)
                if out.stdout.strip() == "(3, 12)":
                    return path
            except (OSError, subprocess.TimeoutExpired):
                pass
    return sys.executable


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", type=Path, default=REPO / ".whl" / "sglang")
    ap.add_argument("--batch-mib", type=float, default=60)
    ap.add_argument("--python", default=None, help="interpreter whose pip resolves (default: a Python 3.12 if found)")
    ap.add_argument("--python-version", default="3.12")
    ap.add_argument("--keep", default="", help="comma list of image packages to ship anyway (e.g. transformers)")
    ap.add_argument("--exclude", default="", help="comma list of extra packages to leave out")
    ap.add_argument("--no-sglang-kernel", action="store_true")
    ap.add_argument("--no-cutlass", action="store_true", help="leave out nvidia-cutlass (ETAP's CUTLASS headers)")
    ap.add_argument("--fa3", action="store_true", help="also pack sgl_kernel's FlashAttention-3 library (xz parts "
                    "under DEST/fa3, one transfer each) for the FA3 MLA baseline")
    args = ap.parse_args(argv)

    python = args.python or find_python312()
    dest = args.dest
    dl = dest / "download"
    dl.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="etap-wheelhouse-"))
    keep = {norm(x) for x in args.keep.split(",") if x}
    image = {norm(p) for p in IMAGE_PACKAGES} - keep
    excluded_extra = ({norm(x) for x in args.exclude.split(",") if x} | DEFAULT_EXCLUDED) - keep

    def dropped(name: str) -> str:
        n = norm(name)
        if n in ALWAYS_EXCLUDED:
            return "excluded (torch-bound / image CUDA / handled separately)"
        if n.startswith("nvidia-") and n not in NVIDIA_PYTHON_ONLY:
            return "excluded (nvidia-*)"
        if n in excluded_extra:
            return "excluded (--exclude)"
        if n in image:
            return "on the image"
        return ""

    # 1. sglang itself
    pip(python, "download", "--no-deps", *target_flags(args.python_version), "-d", str(dl), SGLANG)
    sglang_whl = next(dl.glob("sglang-0.5.10.post1-*.whl"))
    reqs = wheel_requirements(sglang_whl)
    direct, skipped = [], {}
    for r in reqs:
        why = dropped(r.name)
        if why:
            skipped[norm(r.name)] = f"{why}; sglang asks {r.specifier or 'any'}"
        else:
            direct.append(str(r).split(";")[0].strip())
    (work / "requirements.txt").write_text("\n".join(direct) + "\n")
    constraints = [f"{k}=={v}" for k, v in IMAGE_VERSIONS.items() if norm(k) not in keep]

    # 3. resolve the closure for the target
    report = work / "report.json"
    stubs = work / "stubs"
    stubs.mkdir()
    for name, version in STUBS.items():
        make_stub_wheel(stubs, name, version)
        constraints = [c for c in constraints if norm(c.split("==")[0]) != norm(name)] + [f"{name}=={version}"]
    base = ["install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
            "--find-links", str(stubs), *target_flags(args.python_version), "--target", str(work / "target"),
            "-r", str(work / "requirements.txt")]
    cfile = work / "constraints.txt"
    try:
        cfile.write_text("\n".join(constraints) + "\n")
        pip(python, *base, "-c", str(cfile))
    except subprocess.CalledProcessError:
        print("resolver failed with the image constraints; retrying with the torch family only", flush=True)
        constraints = [f"{k}=={v}" for k, v in STUBS.items()]
        cfile.write_text("\n".join(constraints) + "\n")
        pip(python, *base, "-c", str(cfile))
    resolved = json.loads(report.read_text())["install"]
    keep_list, dropped_closure = [], {}
    for item in resolved:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        why = dropped(name) or ("image stand-in" if version.endswith("+etapstub") else "")
        if why:
            dropped_closure[norm(name)] = f"{why}; resolver picked {version}"
        else:
            keep_list.append((name, version, item["download_info"]["url"]))

    # 4. download the exact resolved versions
    pins = [f"{n}=={v}" for n, v, _ in keep_list]
    pip(python, "download", "--no-deps", *target_flags(args.python_version), "-d", str(dl), *pins)

    wanted = {norm(n): v for n, v, _ in keep_list}
    wheels = []
    for w in dl.glob("*.whl"):
        dist, ver = w.name.split("-")[:2]
        if wanted.get(norm(dist)) == ver or (norm(dist) == "sglang" and ver == "0.5.10.post1"):
            wheels.append(w)

    # 5. sglang-kernel, trimmed + compat
    kernel_note = None
    if not args.no_sglang_kernel:
        kdir = work / "kernel"
        kdir.mkdir()
        cached = list(dl.glob("sglang_kernel-0.4.6-*.whl"))
        if not cached:
            pip(python, "download", "--no-deps", *target_flags(args.python_version), "-d", str(kdir), SGLANG_KERNEL)
            cached = list(kdir.glob("sglang_kernel-0.4.6-*.whl"))
        trimmed_dir = dest / "trimmed"
        trimmed_dir.mkdir(exist_ok=True)
        trimmed = trim_sglang_kernel(cached[0], trimmed_dir)
        wheels.append(trimmed)
        kernel_note = {"source_mib": round(cached[0].stat().st_size / 2**20, 1),
                       "trimmed_mib": round(trimmed.stat().st_size / 2**20, 1),
                       "removed": TRIM_PATTERNS, "compat_module": f"sgl_kernel/{COMPAT_MODULE}.py"}
        if args.fa3:
            kernel_note["fa3"] = pack_fa3(cached[0], dest, int(args.batch_mib * 2**20))
        for c in kdir.glob("*.whl"):
            c.unlink()

    # 6. batches + manifest; nvidia-cutlass (ETAP's build) first, so its build can start early
    first = []
    if not args.no_cutlass:
        pip(python, "download", "--no-deps", *target_flags(args.python_version), "-d", str(dl), CUTLASS)
        first = [next(dl.glob("nvidia_cutlass-4.2.0.0-*.whl"))]
        wheels.append(first[0])
    batches = split_batches(wheels, dest, int(args.batch_mib * 2**20), first)
    total = sum(w.stat().st_size for w in wheels)
    manifest = {
        "sglang": SGLANG, "python": args.python_version, "resolver_python": python,
        "constraints": constraints, "total_mib": round(total / 2**20, 1), "count": len(wheels),
        "packages": sorted(f"{w.name.split('-')[0]}=={w.name.split('-')[1]}" for w in wheels),
        "sizes_mib": {w.name: round(w.stat().st_size / 2**20, 2) for w in sorted(wheels, key=lambda p: -p.stat().st_size)},
        "sglang_kernel": kernel_note, "batches": batches,
        "not_shipped_direct": skipped, "not_shipped_closure": dropped_closure,
    }
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    print(f"\n{len(wheels)} wheels, {total / 2**20:.1f} MiB in {len(batches)} batch(es) under {dest}")
    for b in batches:
        print(f"  {b['dir']}: {b['mib']:6.1f} MiB  {len(b['wheels'])} wheels")
    print(f"manifest: {dest / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
