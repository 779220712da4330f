"""Reading an image store's files with each one checked against its manifest as it is read.

A store's `MANIFEST.json` holds the sha256 of every file, recorded when the store was published.
Opening a store checks sizes only (the quick check, a `stat` per file); a same-size change (a
flipped bit on disk, a chunk copied from another store) passes it. `CheckedLocalStore` is the zarr
store every `ImageStore` reads through: each file zarr fetches (whole chunks, metadata, the sample
table) is hashed from the very bytes zarr is about to decode and compared with the manifest, so a
changed byte stops the read instead of becoming a wrong pixel. Readers read whole chunks anyway;
hashing them costs a few percent of decoding (see `xferlab.benchmarks.integrity`).

A store written before manifests existed has no digests: its reads are not checked (as before),
which `ImageStore` says once.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from zarr.storage import LocalStore

IMAGES = "images"


class StoreError(RuntimeError):
    """An image store is missing, incomplete, or not in a format this xferlab can read."""


class StoreDamagedError(StoreError):
    """An image store's files do not match the sizes / checksums recorded when it was written."""


REPAIR = ("The read was stopped, so nothing is computed from the damaged bytes. Restore the store from a backup, "
          "or delete it and rerun to rebuild it (stores xferlab builds: SynthCell, ToyCell, the importers); "
          "then `python -m xferlab.verify {path}` checks every file, and says which embedding cache "
          "entries were computed from the damaged chunk.")


def chunk_index(key: str) -> int | None:
    """The row-chunk number of an `images` chunk file (`images/c/<i>/0/0/0`), else None."""
    parts = key.split("/")
    if len(parts) >= 3 and parts[0] == IMAGES and parts[1] == "c" and parts[2].isdigit():
        return int(parts[2])
    return None


class CheckedLocalStore(LocalStore):
    """A read-only zarr `LocalStore` whose `get` checks every file against `digests` (path relative
    to the store -> sha256). `digests=None`: nothing to check against (reads pass unchecked).

    `n`, `chunk_rows` and `sample_ids` only serve the error message: the rows (and sample ids) of a
    damaged images chunk."""

    def __init__(self, root: str | Path, digests: dict[str, str] | None, *, n: int | None = None,
                 chunk_rows: int | None = None, sample_ids: Sequence[Any] | None = None,
                 read_only: bool = True):  # accepted as LocalStore's; always read-only
        super().__init__(root, read_only=True)
        self.digests = digests
        self.n, self.chunk_rows, self.sample_ids = n, chunk_rows, sample_ids

    def with_read_only(self, read_only: bool = False) -> "CheckedLocalStore":
        if not read_only:
            raise StoreError(f"{self.root}: an image store is opened read-only")
        return self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CheckedLocalStore) and self.root == other.root and self.digests == other.digests

    async def get(self, key: str, prototype=None, byte_range=None):
        buffer = await super().get(key, prototype, byte_range)
        if self.digests is None:
            return buffer
        if byte_range is not None:  # sharded arrays read parts of files; stores are never sharded
            raise StoreError(f"{self.root}: a partial read of {key} cannot be checked against its recorded "
                             "sha256; xferlab reads whole chunk files only")
        await asyncio.to_thread(self.check, key, buffer)
        return buffer

    def check(self, key: str, buffer) -> None:
        """Raise StoreDamagedError if the bytes read for `key` (None: no such file) are not the ones
        the manifest recorded."""
        expected = self.digests.get(key)
        if buffer is None:
            if expected is not None:  # zarr would read a missing chunk as zeros
                raise self.damaged(key, "is missing")
            return
        if expected is None:
            raise self.damaged(key, "is not listed in MANIFEST.json (a file added after the store was written)")
        data = buffer.as_numpy_array()
        actual = hashlib.sha256(np.ascontiguousarray(data).view(np.uint8)).hexdigest()
        if actual != expected:
            raise self.damaged(key, f"does not match the sha256 recorded when the store was written ({len(data)} "
                                    "bytes read: changed on disk, or replaced by another file)")

    def damaged(self, key: str, problem: str) -> StoreDamagedError:
        return StoreDamagedError(f"{self.root} is a damaged image store: {key}{self.rows_of(key)} {problem}. "
                                 + REPAIR.format(path=self.root))

    def rows_of(self, key: str) -> str:
        chunk = chunk_index(key)
        if chunk is None or self.chunk_rows is None or self.n is None:
            return ""
        start, stop = chunk * self.chunk_rows, min((chunk + 1) * self.chunk_rows, self.n) - 1
        ids = ""
        if self.sample_ids is not None and stop < len(self.sample_ids):
            ids = f", sample ids {self.sample_ids[start]!s} to {self.sample_ids[stop]!s}"
        return f" (image chunk {chunk}: rows {start}-{stop}{ids})"


def recorded_digests(manifest: dict[str, Any] | None) -> dict[str, str] | None:
    """`path -> sha256` of every file a manifest lists (None for no manifest)."""
    if manifest is None:
        return None
    return {rel: sha for rel, (_, sha) in manifest["files"].items()}


def image_chunk_digests(digests: dict[str, str]) -> dict[str, str]:
    """The digests of the files that make up the `images` array (its chunks and its metadata)."""
    return {rel: sha for rel, sha in sorted(digests.items()) if rel.startswith(IMAGES + "/")}
