"""Detecting damaged files: manifests of zarr folders (image stores, embedding cache entries) and
checks of checkpoint files.

A folder published by xferlab carries `MANIFEST.json`, written just before its `COMPLETE` marker:
the size and sha256 of every file in it. On open, files are checked against it:
- `quick` (the default for image stores): every listed file exists with its recorded size, a
  `stat` per file; catches deleted and truncated chunks;
- `full`: also the sha256 of every file, and no unlisted files; catches flipped bytes. Embedding
  cache entries are always checked in full (every job reads the whole entry anyway); image stores
  when asked: `verify=full` in the train / pretrain / prepare config, or `python -m xferlab.verify`.
  Image stores are also checked file by file as they are read (`xferlab.data.checked_reads`), so a
  same-size change that the quick check misses still stops the job that reads it.
Folders written before manifests existed open as they are ("no checksums recorded", logged once).

Checkpoints (`.ckpt`, `.pth`, `.pt` in PyTorch's zip format) carry a CRC32 per member, which
`torch.load` does not check: a flipped byte loads silently as a wrong weight. `checkpoint_problems`
checks every CRC, then that the file loads.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import os
import pickle
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from xferlab.runtime.io import atomic_write_json

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
MANIFEST_FORMAT = 1
LEVELS = ("quick", "full")
UNLISTED = ("COMPLETE", MANIFEST)  # written after the manifest, or the manifest itself

_level: contextvars.ContextVar[str] = contextvars.ContextVar("xferlab_verify", default="quick")
_unrecorded_logged: set[str] = set()


def check_level(level: str) -> str:
    if level not in LEVELS:
        raise ValueError(f"verify={level!r}; choose one of {LEVELS}")
    return level


def default_level() -> str:
    """The level image stores are checked at when opened (`quick` unless set by `verification`)."""
    return _level.get()


@contextmanager
def verification(level: str | None) -> Iterator[None]:
    """Check image stores opened inside the block at `level` (None: leave as it is)."""
    if level is None:
        yield
        return
    token = _level.set(check_level(str(level)))
    try:
        yield
    finally:
        _level.reset(token)


def file_sha256(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def _files(root: Path) -> Iterator[tuple[str, Path]]:
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if rel not in UNLISTED:
                yield rel, path


def write_manifest(root: str | Path) -> dict[str, Any]:
    """Record the size and sha256 of every file under `root` in `root/MANIFEST.json`."""
    root = Path(root)
    files = {rel: [path.stat().st_size, file_sha256(path)] for rel, path in _files(root)}
    manifest = {"manifest_format": MANIFEST_FORMAT, "algorithm": "sha256", "files": files}
    atomic_write_json(root / MANIFEST, manifest)
    return manifest


def has_manifest(root: str | Path) -> bool:
    return (Path(root) / MANIFEST).is_file()


class ManifestError(ValueError):
    """A MANIFEST.json that cannot be read."""


def read_manifest(root: str | Path) -> dict[str, Any] | None:
    """The manifest of `root` (None when none was recorded); ManifestError if it is unreadable."""
    path = Path(root) / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
        if not all(isinstance(v, list) and len(v) == 2 for v in manifest["files"].values()):
            raise ValueError("an entry is not [size, sha256]")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ManifestError(f"{MANIFEST} unreadable ({err})") from None
    return manifest


def manifest_problems(root: str | Path, level: str = "quick") -> list[str] | None:
    """What is wrong with the files under `root` against its manifest: an empty list when all is
    well, None when no manifest was recorded (a folder written before manifests existed)."""
    root = Path(root)
    check_level(level)
    try:
        manifest = read_manifest(root)
    except ManifestError as err:
        return [str(err)]
    if manifest is None:
        if str(root) not in _unrecorded_logged:
            _unrecorded_logged.add(str(root))
            log.info("%s has no %s (written before xferlab recorded checksums): not checked", root, MANIFEST)
        return None
    listed = manifest["files"]
    problems = []
    for rel, (size, sha) in sorted(listed.items()):
        file = root / rel
        try:
            actual = file.stat().st_size
        except OSError:
            problems.append(f"{rel}: missing")
            continue
        if actual != size:
            problems.append(f"{rel}: {actual} bytes, {size} recorded")
        elif level == "full" and file_sha256(file) != sha:
            problems.append(f"{rel}: content changed (sha256 differs from the one recorded)")
    if level == "full":
        problems += [f"{rel}: not in {MANIFEST}" for rel, _ in _files(root) if rel not in listed]
    return problems


def describe(problems: list[str], limit: int = 5) -> str:
    more = f" (and {len(problems) - limit} more)" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated or damaged."""


def checkpoint_problems(path: str | Path, load: bool = True) -> list[str]:
    """What is wrong with a checkpoint file (an empty list when nothing is): missing, empty, a zip
    member whose CRC32 does not match (flipped bytes) or a truncated archive, or (with `load`) a
    file `torch.load` cannot read. Files in PyTorch's legacy (non-zip) format are only loaded."""
    path = Path(path)
    if not path.is_file():
        return ["missing"]
    if path.stat().st_size == 0:
        return ["empty file"]
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
            return [f"damaged archive ({err})"]
        if bad is not None:
            return [f"member {bad} fails its CRC check (bytes changed)"]
    elif path.suffix in (".ckpt",):
        return ["not a zip archive: truncated, or not a checkpoint"]
    if load:
        import torch

        try:  # never unpickles arbitrary objects: a global outside the allowed set stops the load
            torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            if "Unsupported global" not in str(err):  # a pickled object outside the allowed set: not damage
                return [f"does not load ({_first_line(err)})"]
        except Exception as err:  # noqa: BLE001 - any failure to load is the finding
            return [f"does not load ({type(err).__name__}: {_first_line(err)})"]
    return []


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
