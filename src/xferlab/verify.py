"""`python -m xferlab.verify PATH...`: check image stores, embedding cache entries and checkpoints.

A `.zarr` folder (image store or cache entry) is checked against its `MANIFEST.json` (sha256 of every
file by default, file sizes only with `--quick`); a checkpoint file (`.ckpt`, `.pth`, `.pt`) by the
CRC of every member and a load. Other folders are searched for both (e.g. `outputs/`). Prints one
line per item; exits 1 if anything is damaged or incomplete, 2 if nothing was found to check.

Then, for each embedding cache entry that records the image store it was computed from:
- STALE: the entry was computed from bytes of the store's images that differ from those the store's
  manifest records (a damaged or another copy of the store): its embeddings may be wrong; jobs
  rebuild it on its next use (a failure: exit 1);
- DEPENDS: a store file the entry was computed from is damaged now (found by this check); the entry
  itself was computed from the intact bytes and stays valid, but the store must be restored before
  anything new is extracted from it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Iterator

from xferlab.data.checked_reads import chunk_index, image_chunk_digests, recorded_digests
from xferlab.embeddings.cache import changed_source_files, recorded_source
from xferlab.runtime.integrity import (
    MANIFEST,
    ManifestError,
    checkpoint_problems,
    describe,
    manifest_problems,
    read_manifest,
)

CHECKPOINT_SUFFIXES = (".ckpt", ".pth", ".pt")


def items(path: Path) -> Iterator[Path]:
    """The stores, cache entries and checkpoint files at or under `path`."""
    if path.is_file() or path.suffix == ".zarr":
        yield path
        return
    for folder, dirs, names in os.walk(path):
        dirs.sort()
        keep = []
        for d in dirs:
            if d.endswith(".zarr"):
                yield Path(folder) / d  # a store or entry: checked as a whole, not searched
            elif ".tmp-" not in d:
                keep.append(d)
        dirs[:] = keep
        for name in sorted(names):
            if name.endswith(CHECKPOINT_SUFFIXES) and ".tmp-" not in name:
                yield Path(folder) / name


def check(path: Path, level: str) -> tuple[str, str, list[str]]:
    """(status, detail, problems) for one item: OK, DAMAGED, INCOMPLETE or UNCHECKED."""
    if path.is_dir():
        if not (path / "COMPLETE").exists():
            return "INCOMPLETE", "no COMPLETE marker: its writer was interrupted; delete it", []
        problems = manifest_problems(path, level)
        if problems is None:
            return "UNCHECKED", f"no {MANIFEST} (written before xferlab recorded checksums)", []
        if problems:
            return "DAMAGED", describe(problems), problems
        return "OK", f"files match {MANIFEST} ({level})", []
    if not path.exists():
        return "DAMAGED", "missing", ["missing"]
    problems = checkpoint_problems(path)
    return ("DAMAGED", describe(problems), problems) if problems else ("OK", "every member's CRC matches; loads", [])


def damaged_files(problems: list[str]) -> set[str]:
    """The files named by manifest problems (`<file>: <what is wrong>`)."""
    return {p.split(": ", 1)[0] for p in problems}


def chunks_and_rows(files: list[str], source: dict) -> str:
    named = []
    for rel in files:
        chunk, rows = chunk_index(rel), source.get("chunk_rows")
        if chunk is not None and isinstance(rows, int):
            stop = min((chunk + 1) * rows, int(source.get("n", (chunk + 1) * rows))) - 1
            named.append(f"{rel} (rows {chunk * rows}-{stop})")
        else:
            named.append(rel)
    return describe(named)


def dependencies(entry: Path, damaged: dict[Path, set[str]]) -> list[tuple[str, str]]:
    """STALE / DEPENDS lines for a cache entry (see the module's doc)."""
    source = recorded_source(entry)
    if source is None:
        return []
    store = Path(str(source.get("store")))
    try:
        digests = recorded_digests(read_manifest(store)) if store.is_dir() else None
    except ManifestError:
        digests = None
    stale = changed_source_files(source, None if digests is None else image_chunk_digests(digests))
    lines = []
    if stale:
        lines.append(("STALE", f"computed from {chunks_and_rows(stale, source)} of {store}, whose bytes differ from "
                               "the ones the store's manifest records: from a damaged or another copy of the store, "
                               "so its embeddings may be wrong. Jobs rebuild it on its next use; or delete it."))
    hit = sorted((set(source["files"]) - set(stale)) & damaged.get(store.resolve(), set()))
    if hit:
        lines.append(("DEPENDS", f"computed from {chunks_and_rows(hit, source)} of {store}, damaged now. The entry was "
                                 "computed from the intact bytes (they match the store's manifest) and stays valid; "
                                 "restore the store before extracting anything new from it."))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xferlab.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="stores, cache entries, checkpoints, or folders holding them")
    parser.add_argument("--quick", action="store_true", help="zarr folders: compare file sizes only (no sha256)")
    args = parser.parse_args(argv)
    level = "quick" if args.quick else "full"
    found, bad = 0, 0
    damaged: dict[Path, set[str]] = {}
    folders: list[Path] = []
    for root in args.paths:
        if not root.exists():
            print(f"MISSING     {root}")
            bad += 1
            continue
        for item in items(root):
            status, detail, problems = check(item, level)
            found += 1
            bad += status in ("DAMAGED", "INCOMPLETE")
            print(f"{status:<11} {item}: {detail}", flush=True)
            if item.is_dir():
                folders.append(item)
                if status == "DAMAGED":
                    damaged[item.resolve()] = damaged_files(problems)
    for entry in folders:
        for status, detail in dependencies(entry, damaged):
            bad += status == "STALE"
            print(f"{status:<11} {entry}: {detail}", flush=True)
    if bad:
        return 1
    return 0 if found else 2


if __name__ == "__main__":
    sys.exit(main())
