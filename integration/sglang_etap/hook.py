"""Opt-in ``.pth`` hook: register 'etap' with an unpatched SGLang in *every* Python process.

    python -m etap_integration.sglang_etap.hook install [--site-dir DIR]
    python -m etap_integration.sglang_etap.hook uninstall [--site-dir DIR]
    python -m etap_integration.sglang_etap.hook status [--site-dir DIR]

``install`` writes ``etap_sglang_autoregister.pth`` into site-packages. Python's ``site`` module
executes its single ``import`` line at interpreter start-up; the line does nothing unless the
environment variable ``ETAP_SGLANG_AUTOREGISTER`` is set to a value other than ``""``/``"0"``,
and then only calls ``register()``, which installs import hooks and imports nothing else.
Spawned SGLang workers inherit the environment, so with the variable exported every entry point
(``python -m sglang.launch_server``, ``sglang serve``, ``sglang.bench_one_batch``, ...) accepts
``--attention-backend etap``. Prefer the source patch where you can modify site-packages anyway.
"""

from __future__ import annotations

import argparse
import os
import sys
import sysconfig

PTH_NAME = "etap_sglang_autoregister.pth"
ENV_VAR = "ETAP_SGLANG_AUTOREGISTER"
_MODULE = __name__.rsplit(".", 1)[0] + ".register"


def pth_line(module: str = _MODULE) -> str:
    return (
        f"import os; os.environ.get({ENV_VAR!r}, '') not in ('', '0') and "
        f"__import__({module!r}, fromlist=['register']).register()\n"
    )


def default_site_dir() -> str:
    return sysconfig.get_paths()["purelib"]


def install(site_dir: str) -> str:
    path = os.path.join(site_dir, PTH_NAME)
    with open(path, "w") as f:
        f.write(pth_line())
    return path


def uninstall(site_dir: str) -> bool:
    path = os.path.join(site_dir, PTH_NAME)
    if os.path.exists(path):
        os.remove(path)
        return True
    return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["install", "uninstall", "status"])
    parser.add_argument("--site-dir", default=None, help="site-packages directory (default: this interpreter's)")
    args = parser.parse_args(argv)
    site_dir = args.site_dir or default_site_dir()
    path = os.path.join(site_dir, PTH_NAME)
    if args.action == "install":
        print(f"installed {install(site_dir)}; export {ENV_VAR}=1 to activate")
    elif args.action == "uninstall":
        print(f"removed {path}" if uninstall(site_dir) else f"not installed: {path}")
    else:
        print(f"{'installed' if os.path.exists(path) else 'not installed'}: {path}; "
              f"{ENV_VAR}={os.environ.get(ENV_VAR, '')!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
