"""The embedding cache: embeddings computed once per (backbone weights, channel strategy,
preprocessing, precision, dataset content) and reused by every seed, head and experiment.

Each entry is `<root>/<key>.zarr` with an `embeddings` array `(N, D)`, its spec in the attributes
and a `COMPLETE` marker written last. The key is a digest of the spec, so any change of an input
gives a new entry. Builders hold a file lock, so concurrent jobs build an entry once.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import zarr
from filelock import FileLock

from xferlab.io import atomic_directory
from xferlab.provenance import digest

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
COMPLETE_MARKER = "COMPLETE"


class CacheError(RuntimeError):
    pass


class RowWriter:
    """Receives embedding rows in order and writes them in whole chunks."""

    def __init__(self, array, chunk_rows: int):
        self.array = array
        self.chunk_rows = chunk_rows
        self.n = int(array.shape[0])
        self._next = 0
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0
        self._flushed = 0

    def write(self, rows: np.ndarray, values: np.ndarray) -> None:
        rows = np.asarray(rows)
        if len(rows) == 0:
            return
        expected = np.arange(self._next, self._next + len(rows))
        if not np.array_equal(rows, expected):
            raise CacheError(f"embedding rows arrived out of order: got {rows[:3]}..., expected {expected[:3]}...")
        self._pending.append(np.asarray(values, dtype=np.float32))
        self._pending_rows += len(rows)
        self._next += len(rows)
        if self._pending_rows >= self.chunk_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        block = np.concatenate(self._pending)
        self.array[self._flushed : self._flushed + len(block)] = block
        self._flushed += len(block)
        self._pending, self._pending_rows = [], 0

    def close(self) -> None:
        self._flush()
        if self._flushed != self.n:
            raise CacheError(f"embedding cache incomplete: {self._flushed} of {self.n} rows written")


class EmbeddingCache:
    def __init__(self, root: str | Path, spec: dict[str, Any]):
        self.root = Path(root)
        self.spec = {"cache_format": CACHE_FORMAT, **spec}
        self.key = digest(self.spec, 24)
        self.path = self.root / f"{self.key}.zarr"

    def is_complete(self) -> bool:
        return (self.path / COMPLETE_MARKER).exists()

    def load(self) -> np.ndarray:
        group = zarr.open_group(self.path, mode="r")
        if group.attrs.get("key") != self.key:
            raise CacheError(f"{self.path} holds key {group.attrs.get('key')!r}, expected {self.key}")
        return np.asarray(group["embeddings"][:])

    @contextmanager
    def lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            yield

    @contextmanager
    def build(self, n: int, dim: int, chunk_rows: int) -> Iterator[RowWriter]:
        """Write a new entry under a temporary name; publish it only if every row arrived."""
        with atomic_directory(self.path) as tmp:
            group = zarr.open_group(tmp, mode="w", zarr_format=3)
            array = group.create_array(
                "embeddings", shape=(n, dim), chunks=(min(chunk_rows, max(n, 1)), dim), dtype="float32"
            )
            writer = RowWriter(array, chunk_rows)
            yield writer
            writer.close()
            group.attrs.update({"key": self.key, "spec": self.spec})
            (tmp / COMPLETE_MARKER).write_text(self.key + "\n")
