"""``python -m etap_integration.sglang_etap.launch_server <sglang.launch_server arguments>``

``sglang.launch_server`` for an *unpatched* SGLang, with the 'etap' attention backend registered.
``register()`` runs at import time on purpose: SGLang starts its scheduler/TP processes with
multiprocessing *spawn*, and each spawned child re-imports this module (the parent's
``__main__``) as ``__mp_main__`` before unpickling its work, so every process registers "etap"
before SGLang looks it up. Run it with ``-m`` (a module name is what spawn re-imports).
"""

import os
import sys

from .register import register

register()


def main(argv=None) -> None:
    from sglang.launch_server import run_server
    from sglang.srt.server_args import prepare_server_args
    from sglang.srt.utils import kill_process_tree

    server_args = prepare_server_args(sys.argv[1:] if argv is None else list(argv))
    try:
        run_server(server_args)
    finally:
        kill_process_tree(os.getpid(), include_parent=False)


if __name__ == "__main__":
    main()
