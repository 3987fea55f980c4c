#!/usr/bin/env python3
"""Reassemble sgl_kernel's FlashAttention-3 library from the xz parts that
``scripts/build_sglang_wheelhouse.py --fa3`` wrote (one device transfer each), check its sha256,
and put it into an installed ``sgl_kernel`` (the trimmed wheel leaves it out).

    python3 scripts/unpack_fa3.py PARTS_DIR --site-dir /tmp/site

PARTS_DIR holds ``fa3.json`` and every ``flash_ops.abi3.so.xz.partNN`` it names.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import sys
from pathlib import Path


class _Parts:
    """The parts, read one after the other as one stream."""

    def __init__(self, paths):
        self.files = [open(p, "rb") for p in paths]

    def read(self, n=-1):
        out = b""
        while self.files and (n < 0 or len(out) < n):
            chunk = self.files[0].read(-1 if n < 0 else n - len(out))
            if not chunk:
                self.files.pop(0).close()
                continue
            out += chunk
        return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("parts_dir", type=Path)
    ap.add_argument("--site-dir", type=Path, required=True, help="directory holding the installed sgl_kernel/")
    args = ap.parse_args(argv)
    info = json.loads((args.parts_dir / "fa3.json").read_text())
    missing = [p for p in info["parts"] if not (args.parts_dir / p).exists()]
    if missing:
        print(f"missing parts: {', '.join(missing)}", file=sys.stderr)
        return 1
    target = args.site_dir / info["file"]
    if not target.parent.is_dir():
        print(f"no {target.parent}: install the sglang wheelhouse first", file=sys.stderr)
        return 1
    sha = hashlib.sha256()
    tmp = target.with_suffix(".partial")
    with lzma.open(_Parts([args.parts_dir / p for p in info["parts"]])) as src, open(tmp, "wb") as dst:
        while chunk := src.read(1 << 24):
            sha.update(chunk)
            dst.write(chunk)
    if sha.hexdigest() != info["sha256"] or tmp.stat().st_size != info["bytes"]:
        tmp.unlink()
        print("sha256 or size mismatch: the parts are incomplete or damaged", file=sys.stderr)
        return 1
    tmp.replace(target)
    target.chmod(0o755)
    print(f"{target}: {info['bytes'] / 2**20:.0f} MiB from {len(info['parts'])} parts, sha256 ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
