"""`python -m xferlab.verify PATH...`: check image stores, embedding cache entries and checkpoints.

A `.zarr` folder (image store or cache entry) is checked against its `MANIFEST.json` (sha256 of every
file by default, file sizes only with `--quick`); a checkpoint file (`.ckpt`, `.pth`, `.pt`) by the
CRC of every member and a load. Other folders are searched for both (e.g. `outputs/`). Prints one
line per item; exits 1 if anything is damaged or incomplete, 2 if nothing was found to check.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Iterator

from xferlab.runtime.integrity import MANIFEST, checkpoint_problems, describe, manifest_problems

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


def check(path: Path, level: str) -> tuple[str, str]:
    """(status, detail) for one item: OK, DAMAGED, INCOMPLETE or UNCHECKED."""
    if path.is_dir():
        if not (path / "COMPLETE").exists():
            return "INCOMPLETE", "no COMPLETE marker: its writer was interrupted; delete it"
        problems = manifest_problems(path, level)
        if problems is None:
            return "UNCHECKED", f"no {MANIFEST} (written before xferlab recorded checksums)"
        return ("DAMAGED", describe(problems)) if problems else ("OK", f"files match {MANIFEST} ({level})")
    if not path.exists():
        return "DAMAGED", "missing"
    problems = checkpoint_problems(path)
    return ("DAMAGED", describe(problems)) if problems else ("OK", "every member's CRC matches; loads")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xferlab.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="stores, cache entries, checkpoints, or folders holding them")
    parser.add_argument("--quick", action="store_true", help="zarr folders: compare file sizes only (no sha256)")
    args = parser.parse_args(argv)
    level = "quick" if args.quick else "full"
    found, bad = 0, 0
    for root in args.paths:
        if not root.exists():
            print(f"MISSING     {root}")
            bad += 1
            continue
        for item in items(root):
            status, detail = check(item, level)
            found += 1
            bad += status in ("DAMAGED", "INCOMPLETE")
            print(f"{status:<11} {item}: {detail}", flush=True)
    if bad:
        return 1
    return 0 if found else 2


if __name__ == "__main__":
    sys.exit(main())
