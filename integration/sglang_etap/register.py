"""Register the 'etap' attention backend with an unpatched SGLang at runtime.

``register()`` installs post-import hooks: when (or if already) each SGLang module below is
imported, "etap" is added to the data SGLang consults. Nothing here imports SGLang or torch
itself, so calling ``register()`` is cheap and safe in any process (it is what the ``.pth`` hook
and the launcher wrappers call):

====================================================================  ==========================
module                                                                what is added
====================================================================  ==========================
sglang.srt.server_args                                                "etap" in ATTENTION_BACKEND_CHOICES
                                                                      (argparse ``--attention-backend``),
                                                                      ETAP checks after
                                                                      ``_handle_attention_backend_compatibility``
sglang.srt.layers.attention.attention_registry                       ATTENTION_BACKENDS["etap"]
sglang.srt.model_executor.model_runner                               MLA_ATTENTION_BACKENDS,
                                                                      CHUNKED_PREFIX_CACHE_SUPPORTED_ATTENTION_BACKENDS
sglang.srt.models.deepseek_common.utils                              FORWARD_ABSORB_CORE_ATTENTION_BACKENDS
sglang.srt.models.deepseek_common.attention_backend_handler          AttentionBackendRegistry "etap"
                                                                      (dispatch like flashinfer/flashmla),
                                                                      MHA_ONE_SHOT_SUPPORTED_BACKENDS
sglang.srt.speculative.draft_utils                                   DraftBackendFactory: "etap" decode ->
                                                                      EtapMultiStepDraftBackend, draft
                                                                      extend -> FlashInfer MLA
====================================================================  ==========================

SGLang starts its scheduler/TP workers with ``multiprocessing`` *spawn* (engine.py:
``mp.set_start_method("spawn", force=True)``), so registrations made in the launching process do
not reach them. Each child re-imports the parent's ``__main__`` module under the name
``__mp_main__`` (unless it is a package ``__main__``), which is why the launcher modules in this
package (``launch_server``, ``bench_one_batch``) call ``register()`` at import time; the optional
``.pth`` hook (``hook.py``) covers every other entry point. The source patch
(``patches/sglang-0.5.10.post1-etap.patch``) needs none of this.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import sys
import threading
from typing import Callable, Dict

logger = logging.getLogger(__name__)

BACKEND = "etap"
_PKG = __name__.rsplit(".", 1)[0]  # the package this module lives in (etap_integration.sglang_etap)

_lock = threading.RLock()
_applied: Dict[str, bool] = {}


def _append(lst, name=BACKEND):
    if name not in lst:
        lst.append(name)


# --------------------------------------------------------------------------- per-module patches

def _patch_server_args(mod):
    _append(mod.ATTENTION_BACKEND_CHOICES)
    cls = mod.ServerArgs
    original = cls._handle_attention_backend_compatibility
    if getattr(original, "_etap_wrapped", False):
        return

    def _handle_attention_backend_compatibility(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        validate_server_args(self)
        return result

    _handle_attention_backend_compatibility._etap_wrapped = True
    cls._handle_attention_backend_compatibility = _handle_attention_backend_compatibility


def validate_server_args(args) -> None:
    """ETAP's server-argument rules (the same ones the source patch adds to server_args.py)."""
    uses = BACKEND in (
        getattr(args, "attention_backend", None),
        getattr(args, "decode_attention_backend", None),
        getattr(args, "prefill_attention_backend", None),
    )
    if not uses:
        return
    kv = getattr(args, "kv_cache_dtype", "auto")
    if kv not in ("auto", "bf16", "bfloat16", "fp16", "float16", "fp8_e4m3"):
        raise NotImplementedError(
            f"The 'etap' attention backend does not support --kv-cache-dtype {kv} (FP8 e5m2/FP4 KV "
            "caches); use auto/bf16 or fp8_e4m3."
        )
    page_size = getattr(args, "page_size", None)
    if page_size is not None and page_size < 1:
        raise ValueError(f"The 'etap' attention backend needs --page-size >= 1, got {page_size}")
    topk = getattr(args, "speculative_eagle_topk", None)
    if getattr(args, "speculative_algorithm", None) is not None and topk is not None and topk > 1:
        raise ValueError(
            "The 'etap' attention backend supports speculative decoding with --speculative-eagle-topk 1 only."
        )


def _etap_factory(runner):
    import importlib

    backend = importlib.import_module(_PKG + ".backend")
    return backend.create_etap_backend(runner)


def _patch_registry(mod):
    if BACKEND not in mod.ATTENTION_BACKENDS:
        mod.register_attention_backend(BACKEND)(_etap_factory)


def _patch_model_runner(mod):
    _append(mod.MLA_ATTENTION_BACKENDS)
    _append(mod.CHUNKED_PREFIX_CACHE_SUPPORTED_ATTENTION_BACKENDS)


def _patch_deepseek_utils(mod):
    # Absorbed MLA hands q_nope/q_rope (and k_nope/k_rope) to the backend separately.
    _append(mod.FORWARD_ABSORB_CORE_ATTENTION_BACKENDS)


def _patch_deepseek_handler(mod):
    _append(mod.MHA_ONE_SHOT_SUPPORTED_BACKENDS)
    if BACKEND in mod.AttentionBackendRegistry._handlers:
        return

    def handle_attention_etap(attn, forward_batch):
        # ETAP's extend is FlashInfer MLA's, so dispatch exactly as for "flashinfer" (which is
        # also what "flashmla" gets: MHA one-shot / chunked KV for prefill, absorbed MLA otherwise,
        # honouring --flashinfer-mla-disable-ragged).
        return mod._handle_attention_backend(attn, forward_batch, "flashinfer")

    mod.AttentionBackendRegistry.register(BACKEND, handle_attention_etap)


def _draft_backend_type(factory, backend_name: str):
    backend_type = factory.draft_attn_backend or getattr(factory.server_args, backend_name, None)
    return backend_type or factory.server_args.attention_backend


def _patch_draft_utils(mod):
    cls = mod.DraftBackendFactory
    if getattr(cls, "_etap_patched", False):
        return
    create_decode = cls.create_decode_backend
    create_extend = cls.create_draft_extend_backend

    def create_decode_backend(self):
        if self.speculative_num_steps != 1 and _draft_backend_type(self, "decode_attention_backend") == BACKEND:
            import importlib

            backend = importlib.import_module(_PKG + ".backend")
            return backend.EtapMultiStepDraftBackend(
                self.draft_model_runner, self.topk, self.speculative_num_steps
            )
        return create_decode(self)

    def create_draft_extend_backend(self):
        name = (
            "decode_attention_backend"
            if self.server_args.speculative_attention_mode == "decode"
            else "prefill_attention_backend"
        )
        if _draft_backend_type(self, name) == BACKEND:
            return self._create_flashinfer_prefill_backend()
        return create_extend(self)

    cls.create_decode_backend = create_decode_backend
    cls.create_draft_extend_backend = create_draft_extend_backend
    cls._etap_patched = True


PATCHES: Dict[str, Callable] = {
    "sglang.srt.server_args": _patch_server_args,
    "sglang.srt.layers.attention.attention_registry": _patch_registry,
    "sglang.srt.model_executor.model_runner": _patch_model_runner,
    "sglang.srt.models.deepseek_common.utils": _patch_deepseek_utils,
    "sglang.srt.models.deepseek_common.attention_backend_handler": _patch_deepseek_handler,
    "sglang.srt.speculative.draft_utils": _patch_draft_utils,
}


def _apply(name: str, module) -> None:
    with _lock:
        if _applied.get(name):
            return
        _applied[name] = True
    try:
        PATCHES[name](module)
    except Exception:  # never break SGLang's own import because of us
        logger.exception("etap: could not register with %s", name)


# --------------------------------------------------------------------------- post-import hook

class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader, name):
        self._loader = loader
        self._name = name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _apply(self._name, module)

    def __getattr__(self, attr):  # get_source, get_code, is_package, ... for inspect/linecache
        return getattr(self._loader, attr)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in PATCHES or _applied.get(fullname):
            return None
        for finder in sys.meta_path:
            if finder is self or isinstance(finder, _PostImportFinder):
                continue
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _PatchingLoader(spec.loader, fullname)
        return spec


_finder = None


def register() -> None:
    """Make 'etap' a valid SGLang attention backend in this process (idempotent).

    Modules already imported are patched now; the others when they are imported.
    """
    global _finder
    with _lock:
        if _finder is None:
            _finder = _PostImportFinder()
            sys.meta_path.insert(0, _finder)
    for name in PATCHES:
        module = sys.modules.get(name)
        if module is not None:
            _apply(name, module)


def is_registered() -> bool:
    return _finder is not None
