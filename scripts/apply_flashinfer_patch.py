#!/usr/bin/env python3
"""Apply (or check, or revert) the ETAP patch to an installed FlashInfer.

The patch adds ``backend="etap"`` to ``flashinfer.mla.BatchMLAPagedAttentionWrapper``. Each patch
in ``patches/`` is made for one pinned flashinfer-python release (its ``ETAP-Patch-For:`` line);
the installed release must be exactly that one.

    python scripts/apply_flashinfer_patch.py              # patch the flashinfer that python finds
    python scripts/apply_flashinfer_patch.py --check      # report only, write nothing
    python scripts/apply_flashinfer_patch.py --revert     # undo
    python scripts/apply_flashinfer_patch.py --site-dir /path/to/site-packages

FlashInfer is located with ``importlib.util.find_spec`` (no import: importing flashinfer may need
a GPU); its version is read from the ``flashinfer_python-*.dist-info`` beside it. The patch is
applied by a small pure-Python unified-diff applier (exact context, hunks may move, no fuzz), so
neither ``patch`` nor ``git`` is needed and nothing outside the patched files is touched. All
files are checked before any is written; an already-applied patch is detected (its reverse applies)
and left alone.

Exit status: 0 done / already applied / --check found it applicable or applied;
2 version mismatch or no patch for the installed version; 3 flashinfer not found;
4 the patch does not apply (files differ from the pinned release); 1 other errors.
"""

from __future__ import annotations

import argparse
import email.parser
import importlib.metadata
import importlib.util
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO_ROOT = Path(__file__).resolve().parent.parent
PATCH_DIR = REPO_ROOT / "patches"
DIST_NAME = "flashinfer-python"
PACKAGE = "flashinfer"
PATCH_NAME = "flashinfer-{version}-etap.patch"
PIN_RE = re.compile(r"^ETAP-Patch-For:\s*(\S+?)==(\S+)\s*$", re.M)

EXIT_OK, EXIT_ERROR, EXIT_VERSION, EXIT_NOT_FOUND, EXIT_CONFLICT = 0, 1, 2, 3, 4


class PatchError(Exception):
    def __init__(self, message: str, code: int = EXIT_ERROR):
        super().__init__(message)
        self.code = code


# ----------------------------------------------------------------------------- unified diff

@dataclass
class Hunk:
    old_start: int
    lines: List[Tuple[str, str]]  # (tag, text without newline); tag in " -+"

    def sides(self, reverse: bool) -> Tuple[List[str], List[str]]:
        old = [t for tag, t in self.lines if tag in " -"]
        new = [t for tag, t in self.lines if tag in " +"]
        return (new, old) if reverse else (old, new)


@dataclass
class FilePatch:
    path: str  # relative to the site directory
    hunks: List[Hunk] = field(default_factory=list)


@dataclass
class Patch:
    dist: str
    version: str
    files: List[FilePatch]


_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def _strip_prefix(name: str) -> str:
    name = name.split("\t")[0].strip()
    if name.startswith(("a/", "b/")):
        name = name[2:]
    return name


def parse_patch(text: str, source: str = "patch") -> Patch:
    pin = PIN_RE.search(text)
    if not pin:
        raise PatchError(f"{source}: no 'ETAP-Patch-For: <dist>==<version>' line")
    lines = text.splitlines()
    files: List[FilePatch] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            new_name = _strip_prefix(lines[i + 1][4:])
            files.append(FilePatch(new_name))
            i += 2
            continue
        m = _HUNK_RE.match(line)
        if m:
            if not files:
                raise PatchError(f"{source}: hunk before any file header (line {i + 1})")
            old_len = int(m.group(2)) if m.group(2) is not None else 1
            new_len = int(m.group(4)) if m.group(4) is not None else 1
            hunk = Hunk(int(m.group(1)), [])
            seen_old = seen_new = 0
            i += 1
            while i < len(lines) and (seen_old < old_len or seen_new < new_len):
                body = lines[i]
                if body.startswith("\\"):  # "\ No newline at end of file"
                    i += 1
                    continue
                tag, content = (body[:1] or " "), body[1:]
                if tag not in " -+":
                    raise PatchError(f"{source}: bad hunk line {i + 1}: {body!r}")
                hunk.lines.append((tag, content))
                seen_old += tag in " -"
                seen_new += tag in " +"
                i += 1
            if (seen_old, seen_new) != (old_len, new_len):
                raise PatchError(f"{source}: truncated hunk ending at line {i}")
            files[-1].hunks.append(hunk)
            continue
        i += 1
    if not files or not all(f.hunks for f in files):
        raise PatchError(f"{source}: no file changes found")
    return Patch(pin.group(1), pin.group(2), files)


def _find(lines: List[str], block: List[str], expected: int, start: int) -> Optional[int]:
    """First exact match of block at or after start, nearest to expected."""
    n, k = len(lines), len(block)
    if k == 0:
        return min(max(expected, start), n)
    matches = [pos for pos in range(start, n - k + 1) if lines[pos:pos + k] == block]
    return min(matches, key=lambda pos: (abs(pos - expected), pos)) if matches else None


def apply_hunks(text: str, hunks: List[Hunk], reverse: bool = False) -> Optional[str]:
    """The patched text, or None if some hunk does not match exactly."""
    newline = "\r\n" if "\r\n" in text else "\n"
    ends_with_newline = text.endswith(("\n", "\r"))
    lines = text.splitlines()
    out: List[str] = []
    cursor = 0
    delta = 0
    for hunk in hunks:
        old, new = hunk.sides(reverse)
        expected = max(hunk.old_start - 1 + delta, 0)
        pos = _find(lines, old, expected, cursor)
        if pos is None:
            return None
        out.extend(lines[cursor:pos])
        out.extend(new)
        cursor = pos + len(old)
        delta += len(new) - len(old)
    out.extend(lines[cursor:])
    result = newline.join(out)
    if ends_with_newline or not text:
        result += newline
    return result


# ----------------------------------------------------------------------------- locating flashinfer

def find_site_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)  # locates, does not import, a top-level package
    if spec is None or not spec.submodule_search_locations:
        raise PatchError(
            f"could not find an installed '{PACKAGE}' package for {sys.executable}; "
            "install flashinfer-python or pass --site-dir", EXIT_NOT_FOUND,
        )
    return Path(list(spec.submodule_search_locations)[0]).resolve().parent


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_version(site_dir: Path, use_metadata_fallback: bool) -> str:
    versions = set()
    for info in sorted(site_dir.glob("*.dist-info")) + sorted(site_dir.glob("*.egg-info")):
        meta = info / "METADATA" if info.suffix == ".dist-info" else info / "PKG-INFO"
        if not meta.is_file():
            continue
        headers = email.parser.Parser().parsestr(meta.read_text(encoding="utf-8", errors="replace"), headersonly=True)
        if _normalize(headers.get("Name", "")) == DIST_NAME:
            versions.add(headers.get("Version", "").strip())
    if len(versions) > 1:
        raise PatchError(
            f"several {DIST_NAME} metadata directories in {site_dir} ({', '.join(sorted(versions))}); "
            "reinstall flashinfer-python cleanly", EXIT_VERSION,
        )
    if versions:
        return versions.pop()
    if use_metadata_fallback:  # e.g. an editable install whose metadata lives elsewhere
        try:
            return importlib.metadata.version(DIST_NAME)
        except importlib.metadata.PackageNotFoundError:
            pass
    raise PatchError(f"no {DIST_NAME} dist-info found in {site_dir}", EXIT_NOT_FOUND)


def available_patches() -> Dict[str, Path]:
    found = {}
    for path in sorted(PATCH_DIR.glob(PATCH_NAME.format(version="*"))):
        pin = PIN_RE.search(path.read_text(encoding="utf-8"))
        if pin and _normalize(pin.group(1)) == DIST_NAME:
            found[pin.group(2)] = path
    return found


# ----------------------------------------------------------------------------- main logic

def plan_changes(patch: Patch, site_dir: Path, revert: bool) -> Tuple[str, Dict[Path, str]]:
    """('applied' | 'not-applied', {path: new text for the requested action})."""
    states, forward, backward = {}, {}, {}
    for fp in patch.files:
        path = site_dir / fp.path
        if not path.is_file():
            raise PatchError(f"{path} does not exist: is {site_dir} a {DIST_NAME} installation?", EXIT_CONFLICT)
        text = path.read_text(encoding="utf-8")
        rev = apply_hunks(text, fp.hunks, reverse=True)
        fwd = apply_hunks(text, fp.hunks) if rev is None else None
        if rev is not None:
            states[path], backward[path] = "applied", rev
        elif fwd is not None:
            states[path], forward[path] = "not-applied", fwd
        else:
            raise PatchError(
                f"the ETAP patch does not apply to {path}: it differs from the pinned "
                f"{DIST_NAME}=={patch.version} source (locally modified?). Reinstall with "
                f"'pip install --force-reinstall --no-deps {DIST_NAME}=={patch.version}'.",
                EXIT_CONFLICT,
            )
    kinds = set(states.values())
    if len(kinds) > 1:
        detail = ", ".join(f"{p.name}: {s}" for p, s in states.items())
        raise PatchError(f"the ETAP patch is only partly applied ({detail}); reinstall flashinfer", EXIT_CONFLICT)
    state = kinds.pop()
    return state, (backward if revert else forward)


def _write_atomic(path: Path, text: str) -> None:
    if path.suffix == ".py":
        compile(text, str(path), "exec")  # never write a file that does not parse
    mode = path.stat().st_mode
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    cache = path.parent / "__pycache__"
    for pyc in cache.glob(f"{path.stem}.*.pyc") if cache.is_dir() else ():
        pyc.unlink(missing_ok=True)


def run(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site-dir", type=Path, help="directory holding flashinfer/ and its dist-info "
                        "(default: where this python finds flashinfer, without importing it)")
    parser.add_argument("--patch", type=Path, help="patch file (default: patches/flashinfer-<installed version>-etap.patch)")
    parser.add_argument("--check", "--dry-run", dest="check", action="store_true",
                        help="report whether the patch is applied or applies cleanly; write nothing")
    parser.add_argument("--revert", action="store_true", help="remove the patch")
    args = parser.parse_args(argv)

    try:
        if args.site_dir is not None:
            site_dir = args.site_dir.resolve()
            if not (site_dir / PACKAGE).is_dir():
                raise PatchError(f"{site_dir} has no {PACKAGE}/ directory", EXIT_NOT_FOUND)
        else:
            site_dir = find_site_dir()
        version = installed_version(site_dir, use_metadata_fallback=args.site_dir is None)

        if args.patch is not None:
            patch_path = args.patch
        else:
            patches = available_patches()
            if version not in patches:
                supported = ", ".join(f"{DIST_NAME}=={v}" for v in patches) or "none"
                raise PatchError(
                    f"no ETAP patch for the installed {DIST_NAME}=={version} (in {site_dir}); "
                    f"supported: {supported}. Install a supported version, e.g. "
                    f"'pip install {DIST_NAME}=={next(iter(patches), '?')}'.", EXIT_VERSION,
                )
            patch_path = patches[version]
        patch = parse_patch(patch_path.read_text(encoding="utf-8"), str(patch_path))
        if _normalize(patch.dist) != DIST_NAME or patch.version != version:
            raise PatchError(
                f"{patch_path.name} is for {patch.dist}=={patch.version}, but {site_dir} has "
                f"{DIST_NAME}=={version}; refusing to patch a different version", EXIT_VERSION,
            )

        state, changes = plan_changes(patch, site_dir, args.revert)
        where = f"{DIST_NAME}=={version} in {site_dir}"
        if args.revert:
            if state == "not-applied":
                print(f"ETAP patch is not applied to {where}; nothing to revert")
            elif args.check:
                print(f"ETAP patch is applied to {where} and can be reverted (--check: nothing written)")
            else:
                for path, text in changes.items():
                    _write_atomic(path, text)
                print(f"reverted the ETAP patch from {where}")
        elif state == "applied":
            print(f"ETAP patch already applied to {where}; nothing to do")
        elif args.check:
            print(f"ETAP patch applies cleanly to {where} (--check: nothing written)")
        else:
            for path, text in changes.items():
                _write_atomic(path, text)
            print(f"applied {patch_path.name} to {where}: BatchMLAPagedAttentionWrapper now accepts backend='etap'")
        return EXIT_OK
    except PatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code


if __name__ == "__main__":
    sys.exit(run())
