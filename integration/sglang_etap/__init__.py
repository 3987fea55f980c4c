"""ETAP MLA decode inside SGLang (pinned: sglang==0.5.10.post1).

Installed as ``etap_integration.sglang_etap``. Two ways to get ``--attention-backend etap``:

1. Patch the installed SGLang once (preferred; every entry point then knows "etap")::

       python scripts/apply_sglang_patch.py            # or --check / --site-dir DIR

2. Unpatched SGLang, runtime registration (``register()``, see ``register.py``)::

       python -m etap_integration.sglang_etap.launch_server --model-path ... --attention-backend etap
       python -m etap_integration.sglang_etap.bench_one_batch ... --attention-backend etap
       python -m etap_integration.sglang_etap.hook install   # opt-in .pth hook for any entry point
                                                              # (active when ETAP_SGLANG_AUTOREGISTER=1)

Importing this package imports neither SGLang nor torch; ``EtapAttnBackend`` and
``EtapMultiStepDraftBackend`` are loaded on first access.
"""

from .register import BACKEND, register, validate_server_args

SGLANG_VERSION = "0.5.10.post1"

__all__ = [
    "BACKEND",
    "SGLANG_VERSION",
    "EtapAttnBackend",
    "EtapMultiStepDraftBackend",
    "create_etap_backend",
    "register",
    "validate_server_args",
]


def __getattr__(name):
    if name in ("EtapAttnBackend", "EtapMultiStepDraftBackend", "create_etap_backend"):
        from . import backend

        return getattr(backend, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
