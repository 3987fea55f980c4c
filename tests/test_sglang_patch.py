"""CPU tests of the SGLang integration: the source patch, its applier, runtime registration and
the paging helpers of the ETAP backend.

The pinned wheel (sglang==0.5.10.post1) is fetched once per session with ``pip download
--no-deps``; the tests skip when PyPI cannot be reached. Importing ``sglang.srt.server_args``
needs most of SGLang's ~60 dependencies (tqdm, transformers, fastapi, ...), which CI does not
install, so "etap is a valid --attention-backend choice" is checked on the patched source with
``ast`` (the choices list literal, and that ``--attention-backend`` uses it) instead of importing
it. Runtime registration and the spawn re-import are exercised against small stub SGLang modules
(plus the real, dependency-free ``attention_registry.py``) in subprocesses.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PATCH = REPO / "patches" / "sglang-0.5.10.post1-etap.patch"
APPLIER = REPO / "scripts" / "apply_sglang_patch.py"
VERSION = "0.5.10.post1"

PATCHED_FILES = [
    "sglang/srt/server_args.py",
    "sglang/srt/layers/attention/attention_registry.py",
    "sglang/srt/model_executor/model_runner.py",
    "sglang/srt/models/deepseek_common/attention_backend_handler.py",
    "sglang/srt/models/deepseek_common/utils.py",
    "sglang/srt/speculative/draft_utils.py",
]


def _load_applier():
    spec = importlib.util.spec_from_file_location("apply_sglang_patch", APPLIER)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while it executes
    spec.loader.exec_module(mod)
    return mod


applier = _load_applier()


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def sglang_wheel(tmp_path_factory) -> Path:
    cached = os.environ.get("ETAP_SGLANG_WHEEL")
    if cached and Path(cached).is_file():
        return Path(cached)
    dest = tmp_path_factory.mktemp("sglang_wheel")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--only-binary=:all:", "-d", str(dest), f"sglang=={VERSION}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    except (subprocess.TimeoutExpired, OSError) as exc:
        pytest.skip(f"cannot download sglang=={VERSION}: {exc}")
    wheels = list(dest.glob("sglang-*.whl"))
    if proc.returncode != 0 or not wheels:
        pytest.skip(f"cannot download sglang=={VERSION} (PyPI unreachable?): {proc.stderr[-500:]}")
    return wheels[0]


@pytest.fixture(scope="session")
def pristine(tmp_path_factory, sglang_wheel) -> Path:
    """The pinned sources the patch touches, plus the dist-info, extracted once."""
    root = tmp_path_factory.mktemp("sglang_pristine")
    with zipfile.ZipFile(sglang_wheel) as zf:
        names = [n for n in zf.namelist() if n in PATCHED_FILES or n.startswith(f"sglang-{VERSION}.dist-info/")]
        zf.extractall(root, names)
    for rel in PATCHED_FILES:
        assert (root / rel).is_file(), rel
    return root


@pytest.fixture
def site(tmp_path, pristine) -> Path:
    dst = tmp_path / "site-packages"
    shutil.copytree(pristine, dst)
    return dst


def _snapshot(site_dir: Path):
    return {rel: (site_dir / rel).read_bytes() for rel in PATCHED_FILES}


def _run(site_dir: Path, **kw):
    out = io.StringIO()
    rc = applier.run(str(site_dir), str(PATCH), kw.get("check", False), kw.get("reverse", False),
                     kw.get("allow_version_mismatch", False), out=out)
    return rc, out.getvalue()


# --------------------------------------------------------------------------- the patch

def test_patch_applies_cleanly(site):
    before = _snapshot(site)
    rc, out = _run(site)
    assert rc == 0, out
    after = _snapshot(site)
    assert all(before[f] != after[f] for f in PATCHED_FILES), out
    assert "done: patched 6 file(s)" in out


def test_patched_files_byte_compile(site, tmp_path):
    assert _run(site)[0] == 0
    import py_compile

    for rel in PATCHED_FILES:
        py_compile.compile(str(site / rel), cfile=str(tmp_path / (rel.replace("/", "_") + "c")), doraise=True)


def test_apply_twice_is_noop(site):
    assert _run(site)[0] == 0
    once = _snapshot(site)
    rc, out = _run(site)
    assert rc == 0, out
    assert "already patched" in out
    assert _snapshot(site) == once


def test_check_mode_changes_nothing(site):
    before = _snapshot(site)
    rc, out = _run(site, check=True)
    assert rc == 0 and "would apply cleanly" in out, out
    assert _snapshot(site) == before
    _run(site)
    rc, out = _run(site, check=True)
    assert rc == 0 and "already patched" in out


def test_wrong_version_refused(site):
    meta = site / f"sglang-{VERSION}.dist-info" / "METADATA"
    meta.write_text(meta.read_text().replace(f"Version: {VERSION}", "Version: 0.5.9"))
    before = _snapshot(site)
    rc, out = _run(site)
    assert rc == applier.BAD_VERSION, out
    assert "refused" in out and "0.5.9" in out and VERSION in out
    assert _snapshot(site) == before


def test_missing_dist_info_refused(site):
    shutil.rmtree(site / f"sglang-{VERSION}.dist-info")
    rc, out = _run(site)
    assert rc == applier.BAD_VERSION and "unknown" in out


def test_conflict_refused_atomically(site):
    target = site / "sglang/srt/model_executor/model_runner.py"
    target.write_text(target.read_text().replace('    "cutlass_mla",\n    "trtllm_mla",\n]', '    "trtllm_mla",\n]'))
    before = _snapshot(site)
    rc, out = _run(site)
    assert rc == applier.NOT_APPLICABLE, out
    assert "DOES NOT APPLY" in out and "model_runner.py" in out
    assert _snapshot(site) == before  # the files that would have applied are untouched too


def test_reverse_roundtrip(site):
    before = _snapshot(site)
    assert _run(site)[0] == 0
    rc, out = _run(site, reverse=True)
    assert rc == 0, out
    assert _snapshot(site) == before


def test_cli_finds_site_dir_and_exit_codes(site):
    cmd = [sys.executable, str(APPLIER), "--site-dir", str(site), "--check"]
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    missing = subprocess.run([sys.executable, str(APPLIER), "--site-dir", str(site / "nope")], capture_output=True)
    assert missing.returncode == applier.NOT_FOUND


def test_patch_also_applies_with_git(site):
    git = shutil.which("git")
    if git is None:
        pytest.skip("git not installed")
    proc = subprocess.run([git, "apply", "--check", str(PATCH)], cwd=site, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------- patched source (ast)

def _module_assign(tree: ast.Module, name: str):
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} not assigned at module level")


def _parse(site_dir: Path, rel: str) -> ast.Module:
    return ast.parse((site_dir / rel).read_text())


def test_etap_is_an_attention_backend_choice(site):
    assert _run(site)[0] == 0
    tree = _parse(site, "sglang/srt/server_args.py")
    choices = _module_assign(tree, "ATTENTION_BACKEND_CHOICES")
    assert "etap" in choices and "flashmla" in choices
    # --attention-backend / --prefill-attention-backend / --decode-attention-backend use that list
    flags = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument" and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and str(first.value).endswith("attention-backend"):
                for kw in node.keywords:
                    if kw.arg == "choices" and isinstance(kw.value, ast.Name):
                        assert kw.value.id == "ATTENTION_BACKEND_CHOICES"
                        flags.add(first.value)
    assert {"--attention-backend", "--prefill-attention-backend", "--decode-attention-backend"} <= flags
    # validation block exists and checks the KV dtype
    src = (site / "sglang/srt/server_args.py").read_text()
    assert "The 'etap' attention backend does not support --kv-cache-dtype" in src


def test_etap_in_runtime_lists(site):
    assert _run(site)[0] == 0
    mr = _parse(site, "sglang/srt/model_executor/model_runner.py")
    assert "etap" in _module_assign(mr, "MLA_ATTENTION_BACKENDS")
    assert "etap" in _module_assign(mr, "CHUNKED_PREFIX_CACHE_SUPPORTED_ATTENTION_BACKENDS")
    utils = _parse(site, "sglang/srt/models/deepseek_common/utils.py")
    assert "etap" in _module_assign(utils, "FORWARD_ABSORB_CORE_ATTENTION_BACKENDS")
    handler = _parse(site, "sglang/srt/models/deepseek_common/attention_backend_handler.py")
    assert "etap" in _module_assign(handler, "MHA_ONE_SHOT_SUPPORTED_BACKENDS")
    registered = {
        node.args[0].value
        for node in ast.walk(handler)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "register"
        and node.args and isinstance(node.args[0], ast.Constant)
    }
    assert {"etap", "flashmla", "flashinfer"} <= registered
    reg = _parse(site, "sglang/srt/layers/attention/attention_registry.py")
    decorated = {
        dec.args[0].value
        for node in reg.body if isinstance(node, ast.FunctionDef)
        for dec in node.decorator_list
        if isinstance(dec, ast.Call) and getattr(dec.func, "id", None) == "register_attention_backend"
    }
    assert "etap" in decorated
    draft = (site / "sglang/srt/speculative/draft_utils.py").read_text()
    assert '"etap": self._create_etap_decode_backend' in draft
    assert "EtapMultiStepDraftBackend" in draft


def test_registry_factory_imports_lazily_with_clear_error(site, tmp_path):
    """The real (dependency-free) attention_registry.py, patched: "etap" is registered and, without
    the ETAP package, creating it raises an ImportError that says what to install."""
    assert _run(site)[0] == 0
    script = textwrap.dedent(
        """
        import importlib.util, sys, types
        spec = importlib.util.spec_from_file_location("reg", sys.argv[1])
        reg = importlib.util.module_from_spec(spec); spec.loader.exec_module(reg)
        assert "etap" in reg.ATTENTION_BACKENDS
        sys.modules["etap_integration"] = None  # not importable
        try:
            reg.ATTENTION_BACKENDS["etap"](types.SimpleNamespace(use_mla_backend=True))
        except ImportError as e:
            assert "ETAP package" in str(e), e
            print("OK")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script, str(site / "sglang/srt/layers/attention/attention_registry.py")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr


# --------------------------------------------------------------------------- runtime registration

_STUBS = {
    "sglang/__init__.py": "",
    "sglang/srt/__init__.py": "",
    "sglang/srt/layers/__init__.py": "",
    "sglang/srt/layers/attention/__init__.py": "",
    "sglang/srt/model_executor/__init__.py": "",
    "sglang/srt/models/__init__.py": "",
    "sglang/srt/models/deepseek_common/__init__.py": "",
    "sglang/srt/speculative/__init__.py": "",
    "sglang/srt/server_args.py": """
        ATTENTION_BACKEND_CHOICES = ["triton", "flashinfer", "flashmla"]
        class ServerArgs:
            def __init__(self, **kw):
                self.attention_backend = None; self.decode_attention_backend = None
                self.prefill_attention_backend = None; self.kv_cache_dtype = "auto"
                self.page_size = 1; self.speculative_algorithm = None; self.speculative_eagle_topk = None
                self.__dict__.update(kw)
            def _handle_attention_backend_compatibility(self):
                self.checked = True
        def prepare_server_args(argv):
            import argparse
            p = argparse.ArgumentParser()
            p.add_argument("--attention-backend", choices=ATTENTION_BACKEND_CHOICES)
            p.add_argument("--out")
            return p.parse_args(argv)
    """,
    "sglang/srt/model_executor/model_runner.py": """
        MLA_ATTENTION_BACKENDS = ["flashinfer", "flashmla"]
        CHUNKED_PREFIX_CACHE_SUPPORTED_ATTENTION_BACKENDS = ["flashinfer", "flashmla"]
    """,
    "sglang/srt/models/deepseek_common/utils.py": """
        FORWARD_ABSORB_CORE_ATTENTION_BACKENDS = ["flashinfer", "cutlass_mla"]
    """,
    "sglang/srt/models/deepseek_common/attention_backend_handler.py": """
        MHA_ONE_SHOT_SUPPORTED_BACKENDS = ["flashinfer", "flashmla"]
        class AttentionBackendRegistry:
            _handlers = {}
            @classmethod
            def register(cls, name, fn): cls._handlers[name] = fn
        def _handle_attention_backend(attn, forward_batch, backend_name):
            return ("dispatched-as", backend_name)
    """,
    "sglang/srt/speculative/draft_utils.py": """
        class DraftBackendFactory:
            def __init__(self, server_args, draft_model_runner=None, topk=1, speculative_num_steps=3):
                self.server_args = server_args; self.draft_model_runner = draft_model_runner
                self.topk = topk; self.speculative_num_steps = speculative_num_steps
                self.draft_attn_backend = None
            def create_decode_backend(self): return "upstream-decode"
            def create_draft_extend_backend(self): return "upstream-extend"
            def _create_flashinfer_prefill_backend(self): return "flashinfer-prefill"
    """,
    "sglang/srt/utils.py": """
        def kill_process_tree(pid, include_parent=True): pass
    """,
    # stands in for sglang.launch_server: starts a worker with spawn, as SGLang's engine does
    "sglang/launch_server.py": """
        import multiprocessing as mp
        from sglang.srt.worker import worker
        def run_server(args):
            mp.set_start_method("spawn", force=True)
            p = mp.Process(target=worker, args=(args.out,)); p.start(); p.join()
            assert p.exitcode == 0
    """,
    "sglang/srt/worker.py": """
        def worker(out):
            from sglang.srt.layers.attention.attention_registry import ATTENTION_BACKENDS
            with open(out, "w") as f:
                f.write("etap" if "etap" in ATTENTION_BACKENDS else "missing")
    """,
}


@pytest.fixture
def stub_env(tmp_path, sglang_wheel):
    stubs = tmp_path / "stubs"
    for rel, body in _STUBS.items():
        path = stubs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body))
    with zipfile.ZipFile(sglang_wheel) as zf:  # the real registry (imports only logging/typing)
        (stubs / "sglang/srt/layers/attention/attention_registry.py").write_bytes(
            zf.read("sglang/srt/layers/attention/attention_registry.py"))
    shim = tmp_path / "shim"
    (shim / "etap_integration").mkdir(parents=True)
    (shim / "etap_integration" / "__init__.py").write_text("")
    os.symlink(REPO / "integration" / "sglang_etap", shim / "etap_integration" / "sglang_etap")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(shim), str(stubs)])
    env.pop("ETAP_SGLANG_AUTOREGISTER", None)
    return env, tmp_path


def _py(env, code, *args, timeout=120):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=tempfile.gettempdir())


def test_register_patches_sglang_modules(stub_env):
    env, _ = stub_env
    proc = _py(env, """
        import sys
        import sglang.srt.model_executor.model_runner as mr      # imported before register()
        from etap_integration.sglang_etap import register
        register(); register()                                    # idempotent
        assert "torch" not in sys.modules and "sglang.srt.server_args" not in sys.modules
        assert mr.MLA_ATTENTION_BACKENDS.count("etap") == 1
        assert "etap" in mr.CHUNKED_PREFIX_CACHE_SUPPORTED_ATTENTION_BACKENDS
        import sglang.srt.server_args as sa                       # imported after register()
        assert sa.ATTENTION_BACKEND_CHOICES.count("etap") == 1
        assert sa.prepare_server_args(["--attention-backend", "etap"]).attention_backend == "etap"
        args = sa.ServerArgs(attention_backend="etap", kv_cache_dtype="fp8_e5m2")
        try:
            args._handle_attention_backend_compatibility(); raise SystemExit("fp8_e5m2 accepted")
        except NotImplementedError as e:
            assert "e5m2" in str(e)
        sa.ServerArgs(attention_backend="etap", kv_cache_dtype="fp8_e4m3")._handle_attention_backend_compatibility()
        ok = sa.ServerArgs(attention_backend="etap", page_size=64); ok._handle_attention_backend_compatibility()
        assert ok.checked
        from sglang.srt.layers.attention.attention_registry import ATTENTION_BACKENDS
        assert "etap" in ATTENTION_BACKENDS and "flashmla" in ATTENTION_BACKENDS
        import sglang.srt.models.deepseek_common.utils as u
        assert "etap" in u.FORWARD_ABSORB_CORE_ATTENTION_BACKENDS
        import sglang.srt.models.deepseek_common.attention_backend_handler as h
        assert "etap" in h.MHA_ONE_SHOT_SUPPORTED_BACKENDS
        assert h.AttentionBackendRegistry._handlers["etap"](None, None) == ("dispatched-as", "flashinfer")
        import sglang.srt.speculative.draft_utils as d
        f = d.DraftBackendFactory(sa.ServerArgs(attention_backend="flashmla", speculative_attention_mode="prefill"))
        assert f.create_decode_backend() == "upstream-decode"
        assert f.create_draft_extend_backend() == "upstream-extend"
        f = d.DraftBackendFactory(sa.ServerArgs(attention_backend="etap", speculative_attention_mode="prefill"))
        assert f.create_draft_extend_backend() == "flashinfer-prefill"
        import inspect
        assert "ATTENTION_BACKEND_CHOICES" in inspect.getsource(sa)  # loader wrapper keeps get_source
        print("OK")
    """)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr


def test_spawned_workers_register_through_launcher(stub_env):
    """SGLang starts workers with spawn; the launcher module is re-imported in each child as
    __mp_main__ and registers there. The plain sglang entry point (control) does not."""
    env, tmp = stub_env
    out = tmp / "child.txt"
    proc = subprocess.run(
        [sys.executable, "-m", "etap_integration.sglang_etap.launch_server", "--attention-backend", "etap",
         "--out", str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == "etap"

    control = tmp / "control.txt"
    proc = subprocess.run([sys.executable, "-c", "import sys; from sglang.launch_server import run_server; "
                           "from sglang.srt.server_args import prepare_server_args; "
                           "run_server(prepare_server_args(sys.argv[1:]))", "--out", str(control)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert control.read_text() == "missing"


def test_pth_hook(stub_env, tmp_path):
    env, _ = stub_env
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    proc = _py(env, "from etap_integration.sglang_etap import hook; import sys; sys.exit(hook.main(['install', '--site-dir', sys.argv[1]]))", str(site_dir))
    assert proc.returncode == 0, proc.stderr
    pth = site_dir / "etap_sglang_autoregister.pth"
    assert pth.read_text().startswith("import ")
    check = ("import site, sys; site.addsitedir(sys.argv[1]); "
             "from sglang.srt.layers.attention.attention_registry import ATTENTION_BACKENDS; "
             "print('etap' in ATTENTION_BACKENDS)")
    off = subprocess.run([sys.executable, "-c", check, str(site_dir)], env=env, capture_output=True, text=True)
    assert off.stdout.strip() == "False", off.stderr
    on = subprocess.run([sys.executable, "-c", check, str(site_dir)], env=dict(env, ETAP_SGLANG_AUTOREGISTER="1"),
                        capture_output=True, text=True)
    assert on.stdout.strip() == "True", on.stderr


# --------------------------------------------------------------------------- paging helpers (torch, CPU)

def _paging():
    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("etap_sglang_paging", REPO / "integration/sglang_etap/_paging.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sglang_like_pool(torch, page_size, lens, max_ctx, seed=0):
    """KV buffer [slots, 1, 576] and req_to_token as SGLang's paged allocator lays them out:
    whole pages handed out in a shuffled order, one page of padding at the end."""
    g = torch.Generator().manual_seed(seed)
    pages_needed = [-(-n // page_size) for n in lens]
    n_pages = sum(pages_needed) + 3
    order = torch.randperm(n_pages, generator=g).tolist()
    req_to_token = torch.zeros((len(lens) + 2, max_ctx), dtype=torch.int32)
    req_pool_indices = torch.randperm(len(lens) + 2, generator=g)[: len(lens)]
    k = 0
    for i, n in enumerate(lens):
        r = int(req_pool_indices[i])
        for p in range(pages_needed[i]):
            page = order[k]; k += 1
            for j in range(p * page_size, min(n, (p + 1) * page_size)):
                req_to_token[r, j] = page * page_size + (j - p * page_size)
    kv = torch.randn(((n_pages + 1) * page_size, 1, 576), generator=g, dtype=torch.float32).to(torch.bfloat16)
    return kv, req_to_token, req_pool_indices


@pytest.mark.parametrize("page_size", [1, 3, 16, 64])
def test_block_table_and_split_cache_match_token_gather(page_size):
    paging = _paging()
    torch = pytest.importorskip("torch")
    lens = [1, 5, 70, 129, 64]
    max_ctx = 160
    kv, req_to_token, rpi = _sglang_like_pool(torch, page_size, lens, max_ctx, seed=page_size)
    width = paging.eager_table_width(max(lens), page_size)
    table = torch.zeros((len(lens), width), dtype=torch.int32)
    paging.fill_block_table_torch(req_to_token, rpi, page_size, table)
    ckv, kpe = paging.split_latent_cache(kv, page_size)
    assert ckv.data_ptr() == kv.data_ptr() and kpe.data_ptr() == kv.data_ptr() + 512 * kv.element_size()
    assert paging.vector_aligned(ckv) and paging.vector_aligned(kpe)
    for i, n in enumerate(lens):
        slots = req_to_token[int(rpi[i]), :n].long()
        pages = table[i, : -(-n // page_size)].long()
        got = torch.cat([ckv[pages].reshape(-1, 512)[:n], kpe[pages].reshape(-1, 64)[:n]], dim=-1)
        assert torch.equal(got, kv[slots, 0]), (page_size, i)


def test_reference_attention_through_block_table():
    """ETAP's float64 reference, fed the backend's views/table, equals attention computed
    directly over the tokens gathered via req_to_token (s_q = 2, causal, like target verify)."""
    paging = _paging()
    torch = pytest.importorskip("torch")
    try:
        sys.path.insert(0, str(REPO))
        from etap_kernels.reference import mla_decode_reference
    except Exception as exc:  # pragma: no cover
        pytest.skip(f"etap_kernels.reference unavailable: {exc}")
    finally:
        sys.path.remove(str(REPO))
    page_size, lens, h, s_q = 16, [3, 40, 17], 4, 2
    kv, req_to_token, rpi = _sglang_like_pool(torch, page_size, lens, 64, seed=7)
    table = torch.zeros((len(lens), paging.eager_table_width(max(lens), page_size)), dtype=torch.int32)
    paging.fill_block_table_torch(req_to_token, rpi, page_size, table)
    ckv, kpe = paging.split_latent_cache(kv, page_size)
    g = torch.Generator().manual_seed(1)
    q = torch.randn((len(lens), s_q, h, 576), generator=g).to(torch.bfloat16)
    scale = 0.1
    out, lse = mla_decode_reference(q[..., :512], q[..., 512:], ckv, kpe, torch.tensor(lens, dtype=torch.int32),
                                    block_table=table, softmax_scale=scale, causal=True)
    for i, n in enumerate(lens):
        keys = kv[req_to_token[int(rpi[i]), :n].long(), 0].double()  # [n, 576]
        for t in range(s_q):
            visible = n - (s_q - 1 - t)
            scores = q[i, t].double() @ keys[:visible].T * scale  # [h, visible]
            ref = torch.softmax(scores, -1) @ keys[:visible, :512]
            assert torch.allclose(out[i, t], ref, atol=1e-10)
            assert torch.allclose(lse[i, :, t], torch.logsumexp(scores, -1), atol=1e-10)


def test_table_widths_and_alignment_helpers():
    paging = _paging()
    torch = pytest.importorskip("torch")
    assert paging.triton_page_size_ok(1) and paging.triton_page_size_ok(64) and not paging.triton_page_size_ok(3)
    assert paging.eager_table_width(1, 64) == 16 and paging.eager_table_width(64 * 17, 64) == 32
    # the graph table covers the longest replayable sequence: context + draft tokens
    for ps in (1, 3, 64):
        w = paging.graph_table_width(4096, 4, ps)
        assert w * ps >= 4096 + 4
    base = torch.zeros((8, 3, 192), dtype=torch.bfloat16)
    q_pe = base[..., 128:]  # DeepSeek's q split: stride 192, offset 128 -> aligned
    assert paging.vector_aligned(q_pe) and paging.as_aligned(q_pe) is q_pe
    odd = torch.zeros((8, 3, 70), dtype=torch.bfloat16)[..., 6:]
    assert not paging.vector_aligned(odd) and paging.as_aligned(odd).is_contiguous()
    with pytest.raises(ValueError):
        paging.split_latent_cache(torch.zeros((64, 1, 512)), 64)


# --------------------------------------------------------------------------- EtapAttnBackend logic (CPU)

_BACKEND_STUBS = {
    "sglang/__init__.py": "",
    "sglang/srt/__init__.py": "",
    "sglang/srt/layers/__init__.py": "",
    "sglang/srt/layers/attention/__init__.py": "",
    "sglang/srt/model_executor/__init__.py": "",
    "sglang/srt/layers/dp_attention.py": "def get_attention_tp_size():\n    return 1\n",
    "sglang/srt/model_executor/forward_batch_info.py": """
        import enum
        class ForwardMode(enum.IntEnum):
            EXTEND = 1; DECODE = 2; MIXED = 3; IDLE = 4; TARGET_VERIFY = 5; DRAFT_EXTEND = 6
            def is_decode_or_idle(self): return self in (ForwardMode.DECODE, ForwardMode.IDLE)
            def is_target_verify(self): return self == ForwardMode.TARGET_VERIFY
        class ForwardBatch: pass
    """,
    # stands in for SGLang's FlashInfer MLA backend: records what was delegated to it
    "sglang/srt/layers/attention/flashinfer_mla_backend.py": """
        class FlashInferMLAAttnBackend:
            def __init__(self, model_runner, skip_prefill=False, kv_indptr_buf=None, q_indptr_decode_buf=None):
                self.max_context_len = model_runner.model_config.context_len
                self.page_size = model_runner.page_size
                self.delegated = []
            def init_forward_metadata(self, fb): self.delegated.append(("init", fb.forward_mode.name))
            def forward_extend(self, q, k, v, layer, fb, save_kv_cache=True, q_rope=None, k_rope=None):
                self.delegated.append(("extend", fb.forward_mode.name)); return "flashinfer"
    """,
    # ETAP kernels: the float64 reference behind the real API names and checks of the arguments
    "etap_kernels/__init__.py": """
        import importlib.util, os, torch
        spec = importlib.util.spec_from_file_location("etap_ref", os.environ["ETAP_REFERENCE"])
        ref = importlib.util.module_from_spec(spec); spec.loader.exec_module(ref)
        calls = []
        def get_mla_metadata(cache_seqlens, rows, h_k, is_fp8_kvcache=False):
            assert cache_seqlens.dtype == torch.int32 and h_k == 1
            calls.append(("meta", rows, is_fp8_kvcache))
            return torch.full((4, 8), rows, dtype=torch.int32), torch.zeros(cache_seqlens.shape[0] + 1, dtype=torch.int32)
        def mla_decode(q_nope, q_rope, ckv, kpe, cache_seqlens, meta, splits, *, block_table=None, kv_indptr=None,
                       kv_indices=None, softmax_scale=None, causal=False, out=None, lse=None, validate_values=None,
                       kv_scale=None, q_scale=None):
            assert validate_values is False and block_table is not None and out is not None
            fp8 = ckv.dtype == torch.float8_e4m3fn
            assert not fp8 or (q_nope.dtype == torch.bfloat16 and out.dtype == torch.bfloat16 and kv_scale is not None)
            assert fp8 or kv_scale is None
            if isinstance(kv_scale, torch.Tensor):
                assert kv_scale.shape == (1,) and kv_scale.dtype == torch.float32
                kv_scale = float(kv_scale)
            assert int(meta[0, 0]) == q_nope.shape[1] * q_nope.shape[2], "schedule for another s_q*h_q"
            assert splits.shape[0] == q_nope.shape[0] + 1
            for t in (q_nope, q_rope, ckv, kpe):
                assert t.stride(-1) == 1 and all(s % 8 == 0 for s in t.stride()[:-1]), t.stride()
            o, l = ref.mla_decode_reference(q_nope, q_rope, ckv, kpe, cache_seqlens, block_table=block_table,
                                            softmax_scale=softmax_scale, causal=causal, kv_scale=kv_scale or 1.0)
            out.copy_(o.to(out.dtype)); calls.append(("decode", tuple(q_nope.shape), causal))
            return out, l
    """,
}

_BACKEND_SCRIPT = """
import sys, types, torch
import etap_kernels
from etap_integration.sglang_etap import backend as B
from sglang.srt.model_executor.forward_batch_info import ForwardMode

H, CTX, NUM_DRAFT = 4, 256, 3
K_SCALE = 0.125
torch.cuda.get_device_properties = lambda dev: types.SimpleNamespace(multi_processor_count=8)

def runner(page_size, kv_dtype=torch.bfloat16, topk=None):
    per_req = -(-CTX // page_size)  # pages per request slot
    n_pages = 8 * per_req + 2
    g = torch.Generator().manual_seed(page_size)
    perm = torch.randperm(8 * per_req, generator=g).view(8, -1)
    r2t = (perm[:, :, None] * page_size + torch.arange(page_size)).reshape(8, -1).to(torch.int32)
    fp8 = kv_dtype == torch.float8_e4m3fn
    vals = torch.randn((n_pages * page_size, 1, 576), generator=g)
    # FP8 pools store k / k_scale as e4m3 bytes in a uint8 buffer, as SGLang's MLATokenToKVPool
    buf = (vals * 8).to(kv_dtype).view(torch.uint8) if fp8 else vals.to(torch.bfloat16)
    def store(loc, x):
        buf[loc] = (x.float() / K_SCALE).to(kv_dtype).view(torch.uint8) if fp8 else x.to(buf.dtype)
    class Pool:
        def get_key_buffer(self, layer_id): return buf.view(kv_dtype) if fp8 else buf
        def set_mla_kv_buffer(self, layer, loc, k, k_rope): store(loc, torch.cat([k, k_rope], -1))
        def set_kv_buffer(self, layer, loc, k, v): store(loc, k)
    cfg = types.SimpleNamespace(kv_lora_rank=512, qk_rope_head_dim=64, num_attention_heads=H, context_len=CTX)
    sa = types.SimpleNamespace(speculative_num_draft_tokens=NUM_DRAFT, speculative_eagle_topk=topk,
                               speculative_algorithm="EAGLE" if topk else None)
    return types.SimpleNamespace(model_config=cfg, kv_cache_dtype=kv_dtype, server_args=sa, dtype=torch.bfloat16,
                                 page_size=page_size, req_to_token_pool=types.SimpleNamespace(req_to_token=r2t, size=8),
                                 pool=Pool(), buf=buf, device="cpu", use_mla_backend=True,
                                 keys=lambda: (buf.view(kv_dtype).double() * K_SCALE) if fp8 else buf.double())

layer = types.SimpleNamespace(tp_q_head_num=H, v_head_dim=512, head_dim=576, scaling=0.07, layer_id=0)

def batch(mr, mode, seq, rpi, n_new):
    seq_t, rpi_t = torch.tensor(seq), torch.tensor(rpi)
    r2t = mr.req_to_token_pool.req_to_token
    if mode == ForwardMode.DECODE:
        loc = r2t[rpi_t, seq_t - 1].long()
    else:
        loc = torch.stack([r2t[rpi_t, seq_t + t] for t in range(n_new)], 1).reshape(-1).long()
    return types.SimpleNamespace(forward_mode=mode, batch_size=len(seq), seq_lens=seq_t, seq_lens_cpu=seq_t.clone(),
                                 req_pool_indices=rpi_t, out_cache_loc=loc, token_to_kv_pool=mr.pool)

def reference(mr, seq, rpi, qn, qr, s_q):
    keys = mr.keys()[:, 0]
    r2t = mr.req_to_token_pool.req_to_token
    q = torch.cat([qn, qr], -1).double().view(len(seq), s_q, H, 576)
    out = torch.zeros(len(seq), s_q, H, 512, dtype=torch.float64)
    for i, (n0, r) in enumerate(zip(seq, rpi)):
        n = n0 if s_q == 1 else n0 + s_q
        k = keys[r2t[r, :n].long()]
        for t in range(s_q):
            vis = n - (s_q - 1 - t)
            out[i, t] = torch.softmax(q[i, t] @ k[:vis].T * layer.scaling, -1) @ k[:vis, :512]
    return out.view(-1, H * 512)

def inputs(n, seed):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g).to(torch.bfloat16)
    qn = r(H, n, 512).transpose(0, 1)            # like DeepSeek's bmm output: strided [n, H, 512]
    qr = r(n, H, 192)[..., 128:]                  # like its q split: stride 192, offset 128
    return qn, qr, r(n, 1, 512), r(n, 1, 64)

def close(a, b, what):
    err = (a.double() - b).abs().max().item()
    assert err < 2e-2, (what, err)

SEQ, RPI = [1, 5, 64, 65, 200], [3, 0, 7, 2, 5]
for ps in (1, 3, 16, 64):
    mr = runner(ps)
    be = B.EtapAttnBackend(mr)
    fb = batch(mr, ForwardMode.DECODE, SEQ, RPI, 1)
    be.init_forward_metadata(fb)
    md = be.forward_metadata
    assert md.block_table.dtype == torch.int32 and md.block_table.shape[1] >= -(-max(SEQ) // ps)
    qn, qr, kn, kr = inputs(len(SEQ), ps)
    out = be.forward_decode(qn, kn, None, layer, fb, q_rope=qr, k_rope=kr)
    assert out.shape == (len(SEQ), H * 512)
    close(out, reference(mr, SEQ, RPI, qn, qr, 1), f"decode ps={ps}")
    out2 = be.forward_decode(torch.cat([qn, qr], -1).reshape(len(SEQ), -1), None, None, layer, fb)
    assert torch.equal(out, out2), "576-wide q convention differs"
    # target verify: s_q = draft tokens, causal, lengths + drafts
    seq_v, rpi_v = [4, 61, 100], [1, 6, 4]
    fbv = batch(mr, ForwardMode.TARGET_VERIFY, seq_v, rpi_v, NUM_DRAFT)
    be.init_forward_metadata(fbv)
    assert be.forward_metadata.s_q == NUM_DRAFT
    assert be.forward_metadata.cache_seqlens.tolist() == [s + NUM_DRAFT for s in seq_v]
    qn, qr, kn, kr = inputs(len(seq_v) * NUM_DRAFT, 10 + ps)
    out = be.forward_extend(qn, kn, None, layer, fbv, q_rope=qr, k_rope=kr)
    assert etap_kernels.calls[-1] == ("decode", (3, NUM_DRAFT, H, 512), True)
    close(out, reference(mr, seq_v, rpi_v, qn, qr, NUM_DRAFT), f"verify ps={ps}")
    # extend is delegated
    fbe = batch(mr, ForwardMode.DECODE, SEQ, RPI, 1); fbe.forward_mode = ForwardMode.EXTEND
    be.init_forward_metadata(fbe)
    assert be.forward_extend(qn, None, None, layer, fbe) == "flashinfer"
    assert be.delegated == [("init", "EXTEND"), ("extend", "EXTEND")]

    # CUDA-graph protocol: static buffers, full-width table, replay rewrites them in place
    be.init_cuda_graph_state(8, 8)
    seq_buf, rpi_buf = torch.ones(8, dtype=torch.int32), torch.zeros(8, dtype=torch.int64)
    be.init_forward_metadata_capture_cuda_graph(4, 4, rpi_buf[:4], seq_buf[:4], None, ForwardMode.DECODE, None)
    cap = be.forward_metadata
    assert cap.block_table.shape == (4, be.cuda_graph_block_table.shape[1])
    assert cap.block_table.shape[1] * ps >= CTX + NUM_DRAFT
    seq_r, rpi_r = [70, 3, 255, 129], [2, 4, 0, 6]
    seq_buf[:4] = torch.tensor(seq_r); rpi_buf[:4] = torch.tensor(rpi_r)
    be.init_forward_metadata_replay_cuda_graph(4, rpi_buf[:4], seq_buf[:4], sum(seq_r), None, ForwardMode.DECODE,
                                               None, seq_lens_cpu=seq_buf[:4].clone())
    rep = be.forward_metadata
    for a, b in ((cap.block_table, rep.block_table), (cap.cache_seqlens, rep.cache_seqlens),
                 (cap.tile_scheduler_metadata, rep.tile_scheduler_metadata), (cap.num_splits, rep.num_splits)):
        assert a.data_ptr() == b.data_ptr() and a.shape == b.shape
    assert rep.cache_seqlens.tolist() == seq_r
    fbr = batch(mr, ForwardMode.DECODE, seq_r, rpi_r, 1)
    qn, qr, kn, kr = inputs(4, 20 + ps)
    out = be.forward_decode(qn, kn, None, layer, fbr, q_rope=qr, k_rope=kr)
    close(out, reference(mr, seq_r, rpi_r, qn, qr, 1), f"graph replay ps={ps}")

# draft steps attend to seq_len + step + 1 tokens
mr = runner(16)
ms = B.EtapMultiStepDraftBackend(mr, 1, 4)
assert [b.decode_extra_tokens for b in ms.attn_backends] == [1, 2, 3]
fb = batch(mr, ForwardMode.DECODE, [10, 20], [0, 1], 1)
ms.init_forward_metadata(fb)
assert [b.forward_metadata.cache_seqlens.tolist() for b in ms.attn_backends] == [[11, 21], [12, 22], [13, 23]]
ms.init_cuda_graph_state(4, 4)
assert len({b.cuda_graph_block_table.data_ptr() for b in ms.attn_backends}) == 1  # one shared table

# FP8 (e4m3) cache, as --kv-cache-dtype fp8_e4m3: bf16 q, the layer's k_scale, bf16 out
mr = runner(16, kv_dtype=torch.float8_e4m3fn)
be = B.EtapAttnBackend(mr)
assert be.is_fp8_kvcache
fb = batch(mr, ForwardMode.DECODE, SEQ, RPI, 1)
be.init_forward_metadata(fb)
assert etap_kernels.calls[-1] == ("meta", H, True), etap_kernels.calls[-1]
layer8 = types.SimpleNamespace(**vars(layer), k_scale=torch.tensor(K_SCALE))
qn, qr, kn, kr = inputs(len(SEQ), 99)
out = be.forward_decode(qn, kn, None, layer8, fb, q_rope=qr, k_rope=kr)
assert out.dtype == torch.bfloat16
close(out, reference(mr, SEQ, RPI, qn, qr, 1), "fp8 decode")

# refusals
for bad, exc in ((dict(kv_dtype=torch.float8_e5m2), NotImplementedError), (dict(topk=2), ValueError)):
    try:
        B.EtapAttnBackend(runner(16, **bad)); raise SystemExit(f"accepted {bad}")
    except exc:
        pass
try:
    B.create_etap_backend(types.SimpleNamespace(use_mla_backend=False)); raise SystemExit("non-MLA accepted")
except ValueError:
    pass
print("OK")
"""


def test_backend_logic_against_reference_on_cpu(tmp_path):
    """EtapAttnBackend with SGLang's base class and the ETAP kernels replaced by stand-ins (the
    kernel by ETAP's float64 reference): decode and target verify for page sizes 1/3/16/64 equal
    attention over the tokens gathered through req_to_token; extend is delegated; the CUDA-graph
    metadata lives in fixed buffers (full-width table) that replay rewrites in place; draft steps
    add step + 1 tokens; an e4m3 cache decodes with bf16 q and the layer's k_scale; FP8 e5m2,
    topk > 1 and non-MLA models are refused."""
    pytest.importorskip("torch")
    stubs = tmp_path / "stubs"
    for rel, body in _BACKEND_STUBS.items():
        path = stubs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body))
    shim = tmp_path / "shim"
    (shim / "etap_integration").mkdir(parents=True)
    (shim / "etap_integration" / "__init__.py").write_text("")
    os.symlink(REPO / "integration" / "sglang_etap", shim / "etap_integration" / "sglang_etap")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(shim), str(stubs)]),
               ETAP_REFERENCE=str(REPO / "etap_kernels" / "reference.py"))
    proc = subprocess.run([sys.executable, "-c", _BACKEND_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)  # not the repo root: its etap_kernels would win
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
