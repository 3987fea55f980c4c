#!/usr/bin/env python3
"""Apply the ETAP patch (``patches/sglang-0.5.10.post1-etap.patch``) to an installed SGLang.

    python scripts/apply_sglang_patch.py                  # patch the sglang this Python imports
    python scripts/apply_sglang_patch.py --check          # report only, change nothing
    python scripts/apply_sglang_patch.py --site-dir DIR   # DIR holds sglang/ and its dist-info
    python scripts/apply_sglang_patch.py --reverse        # undo

The installed SGLang is found without importing it (``importlib.util.find_spec``, else the
``sglang-*.dist-info`` of ``--site-dir``). Its version must be the pinned one (0.5.10.post1):
anything else is refused, since the patch's context is exact. Applying is idempotent: files that
already carry the patch are left alone and a fully patched install is a no-op. A patch that does
not apply (the files were changed some other way) is refused before anything is written; every
patched file is compiled in memory first, then files are replaced atomically.

Exit status: 0 done / already applied (``--check``: applies cleanly or already applied),
1 does not apply, 2 wrong or unknown SGLang version, 3 SGLang not found / bad arguments.
Self-contained (standard library only), so it runs where SGLang's dependencies are not installed.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

PINNED_VERSION = "0.5.10.post1"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PATCH = os.path.join(REPO_ROOT, "patches", f"sglang-{PINNED_VERSION}-etap.patch")

OK, NOT_APPLICABLE, BAD_VERSION, NOT_FOUND = 0, 1, 2, 3


class PatchError(Exception):
    pass


# --------------------------------------------------------------------------- unified diff parsing

@dataclass
class Hunk:
    old_start: int
    lines: List[str] = field(default_factory=list)  # each starts with ' ', '-' or '+'

    def old_block(self) -> List[str]:
        return [l[1:] for l in self.lines if l[0] in " -"]

    def new_block(self) -> List[str]:
        return [l[1:] for l in self.lines if l[0] in " +"]


@dataclass
class FilePatch:
    path: str  # relative to the site dir, e.g. sglang/srt/server_args.py
    hunks: List[Hunk] = field(default_factory=list)


_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def _strip_prefix(path: str) -> str:
    path = path.split("\t")[0].strip()
    if path.startswith(("a/", "b/")):
        path = path[2:]
    return path


def parse_patch(text: str) -> List[FilePatch]:
    files: List[FilePatch] = []
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            new_path = _strip_prefix(lines[i + 1][4:])
            current = FilePatch(new_path)
            files.append(current)
            i += 2
            while i < len(lines):
                m = _HUNK_RE.match(lines[i])
                if not m:
                    break
                old_len = int(m.group(2)) if m.group(2) is not None else 1
                new_len = int(m.group(4)) if m.group(4) is not None else 1
                hunk = Hunk(int(m.group(1)))
                i += 1
                seen_old = seen_new = 0
                while i < len(lines) and (seen_old < old_len or seen_new < new_len):
                    body = lines[i]
                    if body.startswith("\\"):  # "\ No newline at end of file"
                        i += 1
                        continue
                    if body in ("\n", "\r\n"):  # an empty context line whose space was stripped
                        body = " " + body
                    tag = body[:1]
                    if tag not in " -+":
                        raise PatchError(f"malformed hunk in {new_path}: {body!r}")
                    content = body[1:] if body.endswith("\n") or not body else body[1:] + "\n"
                    hunk.lines.append(tag + content)
                    seen_old += tag in " -"
                    seen_new += tag in " +"
                    i += 1
                current.hunks.append(hunk)
            continue
        i += 1
    if not files:
        raise PatchError("no file diffs found in the patch")
    return files


# --------------------------------------------------------------------------- matching

def _find_block(lines: List[str], block: List[str], hint: int, start: int) -> Optional[int]:
    """Index >= start where ``block`` occurs, closest to ``hint``; exact match, no fuzz."""
    n, m = len(lines), len(block)
    if m == 0:
        return max(min(hint, n), start)
    best = None
    for pos in range(start, n - m + 1):
        if lines[pos] == block[0] and lines[pos : pos + m] == block:
            if best is None or abs(pos - hint) < abs(best - hint):
                best = pos
            elif pos > hint:
                break
    return best


def _apply_hunks(lines: List[str], hunks: List[Hunk], reverse: bool) -> Tuple[Optional[List[str]], str]:
    """Apply (or reverse) every hunk in order; (new lines, "") or (None, reason)."""
    out: List[str] = []
    cursor = 0
    offset = 0
    for k, h in enumerate(hunks):
        old, new = (h.new_block(), h.old_block()) if reverse else (h.old_block(), h.new_block())
        hint = max(h.old_start - 1 + offset, 0)
        pos = _find_block(lines, old, hint, cursor)
        if pos is None:
            return None, f"hunk {k + 1} (near line {h.old_start}) does not match"
        out.extend(lines[cursor:pos])
        out.extend(new)
        cursor = pos + len(old)
        offset = pos - (h.old_start - 1)
    out.extend(lines[cursor:])
    return out, ""


@dataclass
class FileState:
    patch: FilePatch
    status: str  # "apply", "applied", "conflict", "missing"
    new_text: Optional[str] = None
    reason: str = ""


def plan(site_dir: str, files: List[FilePatch], reverse: bool = False) -> List[FileState]:
    states = []
    for fp in files:
        path = os.path.join(site_dir, fp.path)
        if not os.path.isfile(path):
            states.append(FileState(fp, "missing", reason=f"{path} not found"))
            continue
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
        lines = text.splitlines(keepends=True)
        forward, why_fwd = _apply_hunks(lines, fp.hunks, reverse)
        backward, _ = _apply_hunks(lines, fp.hunks, not reverse)
        if backward is not None:
            # The target side is already there (for --reverse: the file is unpatched).
            states.append(FileState(fp, "applied"))
        elif forward is not None:
            states.append(FileState(fp, "apply", "".join(forward)))
        else:
            states.append(FileState(fp, "conflict", reason=why_fwd))
    return states


# --------------------------------------------------------------------------- locating sglang

def find_site_dir() -> Optional[str]:
    try:
        spec = importlib.util.find_spec("sglang")  # locates the package, does not import it
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        pkg_dir = list(spec.submodule_search_locations)[0]
    elif spec.origin:
        pkg_dir = os.path.dirname(spec.origin)
    else:
        return None
    return os.path.dirname(os.path.abspath(pkg_dir))


def installed_version(site_dir: str) -> Optional[str]:
    """Version from ``sglang-*.dist-info/METADATA`` (or an .egg-info PKG-INFO) in ``site_dir``."""
    candidates = sorted(glob.glob(os.path.join(site_dir, "sglang-*.dist-info", "METADATA")))
    candidates += sorted(glob.glob(os.path.join(site_dir, "sglang-*.egg-info", "PKG-INFO")))
    candidates += sorted(glob.glob(os.path.join(site_dir, "sglang.egg-info", "PKG-INFO")))
    for meta in candidates:
        name = version = None
        with open(meta, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("Name:"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("Version:"):
                    version = line.split(":", 1)[1].strip()
                elif not line.strip():
                    break
        if name and name.lower() == "sglang" and version:
            return version
    return None


def _atomic_write(path: str, text: str) -> None:
    mode = os.stat(path).st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(prefix=".etap-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# --------------------------------------------------------------------------- main

def run(site_dir: Optional[str], patch_path: str, check: bool, reverse: bool,
        allow_version_mismatch: bool, out=sys.stdout) -> int:
    def say(msg):
        print(msg, file=out)

    if site_dir is None:
        site_dir = find_site_dir()
        if site_dir is None:
            say("error: sglang is not installed in this Python (pass --site-dir DIR)")
            return NOT_FOUND
    site_dir = os.path.abspath(site_dir)
    if not os.path.isdir(os.path.join(site_dir, "sglang")):
        say(f"error: {site_dir} has no sglang/ package")
        return NOT_FOUND
    version = installed_version(site_dir)
    if version != PINNED_VERSION:
        msg = (f"sglang in {site_dir} is version {version or 'unknown (no dist-info)'}; this patch is for "
               f"sglang=={PINNED_VERSION} only. Install that version (pip install sglang=={PINNED_VERSION})")
        if not allow_version_mismatch:
            say("refused: " + msg + ".")
            return BAD_VERSION
        say("warning: " + msg + "; continuing (--allow-version-mismatch).")
    try:
        with open(patch_path, encoding="utf-8") as f:
            files = parse_patch(f.read())
    except (OSError, PatchError) as exc:
        say(f"error: cannot read patch {patch_path}: {exc}")
        return NOT_FOUND

    states = plan(site_dir, files, reverse)
    verb = "reverse" if reverse else "apply"
    for st in states:
        label = {"apply": f"will {verb}" if check else f"{verb}",
                 "applied": "already reverted" if reverse else "already applied",
                 "conflict": "DOES NOT APPLY", "missing": "MISSING"}[st.status]
        say(f"  {label:18s} {st.patch.path}{(': ' + st.reason) if st.reason else ''}")
    bad = [st for st in states if st.status in ("conflict", "missing")]
    if bad:
        say(f"refused: the patch does not {verb} cleanly to sglang in {site_dir}; nothing was changed.")
        return NOT_APPLICABLE
    todo = [st for st in states if st.status == "apply"]
    for st in todo:  # compile everything before writing anything
        try:
            compile(st.new_text, os.path.join(site_dir, st.patch.path), "exec")
        except SyntaxError as exc:
            say(f"refused: patched {st.patch.path} does not compile: {exc}; nothing was changed.")
            return NOT_APPLICABLE
    if not todo:
        say("nothing to do: sglang in %s is already %s." % (site_dir, "unpatched" if reverse else "patched"))
        return OK
    if check:
        say(f"check: the patch would {verb} cleanly ({len(todo)} file(s)).")
        return OK
    for st in todo:
        _atomic_write(os.path.join(site_dir, st.patch.path), st.new_text)
    say(f"done: {'reverted' if reverse else 'patched'} {len(todo)} file(s) of sglang {version} in {site_dir}.")
    return OK


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Apply the ETAP patch to an installed sglang==" + PINNED_VERSION)
    parser.add_argument("--site-dir", help="directory that contains sglang/ (default: where this Python finds sglang)")
    parser.add_argument("--patch", default=DEFAULT_PATCH, help="patch file (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="report whether the patch applies; change nothing")
    parser.add_argument("--reverse", action="store_true", help="remove the patch")
    parser.add_argument("--allow-version-mismatch", action="store_true",
                        help="try even if the installed sglang is not " + PINNED_VERSION)
    args = parser.parse_args(argv)
    return run(args.site_dir, args.patch, args.check, args.reverse, args.allow_version_mismatch)


if __name__ == "__main__":
    sys.exit(main())
