"""The JIT build cache (CPU): a finished build is imported without cpp_extension.load, whose lock
file, left behind by a process killed while loading, would make every later import wait forever."""

import pytest
import torch
from torch.utils import cpp_extension

from etap_kernels import _build


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ETAP_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(_build.importlib, "import_module", _no_aot_module)
    _build.load_extension.cache_clear()
    yield tmp_path
    _build.load_extension.cache_clear()


def _no_aot_module(name):
    raise ImportError(name)


def _build_dir(root):
    return root / f"torch{torch.__version__.replace('+', '_')}-{_build._source_hash()}"


def test_finished_build_skips_the_lock(cache, monkeypatch):
    d = _build_dir(cache)
    d.mkdir(parents=True)
    (d / "lock").touch()  # stale: its process was killed
    (d / _build.BUILD_DONE).touch()
    imported = []
    monkeypatch.setattr(_build, "_import_built", lambda path: imported.append(path) or "module")
    monkeypatch.setattr(cpp_extension, "load", lambda **kw: pytest.fail("cpp_extension.load called"))
    assert _build.load_extension() == "module"
    assert imported == [d / f"{_build.EXT_NAME}.so"]


def test_unfinished_build_warns_of_a_lock_and_marks_success(cache, monkeypatch):
    d = _build_dir(cache)
    d.mkdir(parents=True)
    (d / "lock").touch()
    calls = []
    monkeypatch.setattr(cpp_extension, "load", lambda **kw: calls.append(kw) or "module")
    with pytest.warns(UserWarning, match="lock"):
        assert _build.load_extension() == "module"
    assert calls and calls[0]["build_directory"] == str(d)
    assert (d / _build.BUILD_DONE).exists()


def test_failed_build_is_not_marked(cache, monkeypatch):
    def fail(**kw):
        raise RuntimeError("nvcc failed")
    monkeypatch.setattr(cpp_extension, "load", fail)
    with pytest.raises(RuntimeError, match="nvcc failed"):
        _build.load_extension()
    assert not (_build_dir(cache) / _build.BUILD_DONE).exists()
