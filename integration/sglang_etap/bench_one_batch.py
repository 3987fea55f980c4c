"""``python -m etap_integration.sglang_etap.bench_one_batch <sglang.bench_one_batch arguments>``

``sglang.bench_one_batch`` for an *unpatched* SGLang, with the 'etap' attention backend
registered in this process and (through spawn's ``__mp_main__`` re-import of this module) in
every TP worker it starts. Mirrors the ``__main__`` block of sglang 0.5.10.post1's
``bench_one_batch.py``.
"""

import argparse
import logging
import os
import sys

from .register import register

register()


def main(argv=None) -> None:
    from sglang import bench_one_batch as bench
    from sglang.srt.server_args import ServerArgs
    from sglang.srt.utils import kill_process_tree

    parser = argparse.ArgumentParser()
    ServerArgs.add_cli_args(parser)
    bench.BenchArgs.add_cli_args(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    server_args = ServerArgs.from_cli_args(args)
    bench_args = bench.BenchArgs.from_cli_args(args)
    logging.basicConfig(
        level=getattr(logging, server_args.log_level.upper()), format="%(message)s"
    )
    try:
        bench.main(server_args, bench_args)
    finally:
        if server_args.tp_size != 1:
            kill_process_tree(os.getpid(), include_parent=False)


if __name__ == "__main__":
    main()
