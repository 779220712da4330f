"""The embedding cache: embeddings computed once per (backbone weights, channel strategy,
preprocessing, precision, storage dtype, dataset content) and reused by every seed, head and
experiment.

Each entry is `<root>/<key>.zarr` with an `embeddings` array `(N, D)`, its spec in the attributes,
a `MANIFEST.json` (size and sha256 of every file) and a `COMPLETE` marker written last. The key is a
digest of the spec, so any change of an input gives a new entry. Builders hold a file lock, so
concurrent jobs build an entry once.

An entry is derived data: one whose files do not match its manifest (a damaged chunk), or that
cannot be read, is discarded with a warning naming it and built again. Entries written before
manifests existed are used unchecked. A builder holding the lock removes the temporary folders
(`.<key>.zarr.tmp-*`) of builders that were killed.

An entry also records the image store it was computed from (`computed_from` attribute: the store's path,
images fingerprint, layout and the sha256 of every file of its `images` array, as read). Where the
store's manifest now records other digests for those files, the entry was computed from a damaged
(or another) copy of the store: it is discarded and built again, so wrong embeddings are never
reused once the store is repaired. `python -m xferlab.verify` names entries that depend on a damaged
store chunk.

While an entry is built, rows may come from several writers (one per DDP rank), in any order: each
writer fills whole chunks and records which ones it wrote, and the entry is published only when
every chunk was written exactly once.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import zarr
from filelock import FileLock

from xferlab.runtime import faults
from xferlab.runtime.integrity import manifest_problems, write_manifest
from xferlab.runtime.io import atomic_directory, discard_directory, remove_stale_temp_siblings
from xferlab.runtime.provenance import digest

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
COMPLETE_MARKER = "COMPLETE"
DTYPES = ("float32", "float16")
SOURCE = "computed_from"  # attribute: the image store an entry was computed from
WRITTEN_DIR = "written"  # one file per writer listing the chunks it wrote; removed on publishing


class CacheError(RuntimeError):
    pass


def recorded_source(entry: Path) -> dict[str, Any] | None:
    """The image store an entry records it was computed from (None: recorded none, or unreadable)."""
    try:
        source = json.loads((Path(entry) / "zarr.json").read_text()).get("attributes", {}).get(SOURCE)
    except (OSError, ValueError, AttributeError):
        return None
    return source if isinstance(source, dict) and isinstance(source.get("files"), dict) else None


def changed_source_files(source: dict[str, Any] | None, store_files: dict[str, str] | None) -> list[str]:
    """The store files whose recorded digest in `source` differs from `store_files` (both known)."""
    if source is None or store_files is None:
        return []
    return [rel for rel, sha in sorted(source["files"].items()) if store_files.get(rel) != sha]


class ChunkWriter:
    """Takes embedding rows in any order and writes each chunk of the array once all its rows have
    arrived, so memory holds at most the chunks in progress. Holds only the array's path, so a
    copy can be sent to another process (a DDP rank) and write its own rows there."""

    def __init__(self, path: str | Path, n: int, dim: int, chunk_rows: int, dtype: str, name: str = "0"):
        self.path, self.n, self.dim = Path(path), int(n), int(dim)
        self.chunk_rows, self.dtype, self.name = int(chunk_rows), np.dtype(dtype), str(name)
        self._array = None
        self._pending: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # chunk -> (values, row filled)
        self._written: list[int] = []
        self._closed = False

    def renamed(self, name: str) -> "ChunkWriter":
        """A fresh writer for the same array under another name (e.g. the rank)."""
        return ChunkWriter(self.path, self.n, self.dim, self.chunk_rows, self.dtype.name, name)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}

    def _chunk_bounds(self, chunk: int) -> tuple[int, int]:
        start = chunk * self.chunk_rows
        return start, min(start + self.chunk_rows, self.n)

    def write(self, rows: np.ndarray, values: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        values = np.asarray(values)
        if values.shape != (len(rows), self.dim):
            raise CacheError(f"embedding block of shape {values.shape} for {len(rows)} rows; expected width {self.dim}")
        if len(rows) and (rows.min() < 0 or rows.max() >= self.n):
            raise CacheError(f"embedding rows {rows.min()}..{rows.max()} outside 0..{self.n - 1}")
        bad = ~np.isfinite(values).all(axis=1)
        if not bad.any() and self.dtype != values.dtype:
            with np.errstate(over="ignore"):  # e.g. beyond float16's range: reported below
                bad = ~np.isfinite(values.astype(self.dtype)).all(axis=1)
            if bad.any():
                largest = float(np.abs(values[bad]).max())
                raise CacheError(f"embedding rows {rows[bad][:5].tolist()} overflow extract.dtype={self.dtype.name} "
                                 f"(largest magnitude {largest:.3g}); use extract.dtype=float32")
        if bad.any():
            raise CacheError(f"NaN or infinite embeddings for rows {rows[bad][:5].tolist()}: refusing to cache them")
        for chunk in np.unique(rows // self.chunk_rows):
            if chunk in self._written:
                raise CacheError(f"embedding chunk {chunk} written twice by writer {self.name}")
            start, stop = self._chunk_bounds(int(chunk))
            block, filled = self._pending.setdefault(
                int(chunk), (np.zeros((stop - start, self.dim), self.dtype), np.zeros(stop - start, bool)))
            mine = (rows // self.chunk_rows) == chunk
            local = rows[mine] - start
            if filled[local].any():
                raise CacheError(f"embedding row {start + local[filled[local]][0]} written twice")
            block[local] = values[mine]
            filled[local] = True
            if filled.all():
                self._flush(int(chunk))

    def _flush(self, chunk: int) -> None:
        if self._array is None:
            self._array = zarr.open_array(self.path / "embeddings", mode="r+")
        block, _ = self._pending.pop(chunk)
        start, stop = self._chunk_bounds(chunk)
        self._array[start:stop] = block
        self._written.append(chunk)
        faults.stall_point("cache.chunk_written", str(self.path))

    def close(self) -> list[int]:
        """Record the chunks this writer wrote; a chunk left part-filled is an error."""
        if self._closed:
            return sorted(self._written)
        if self._pending:
            chunk, (_, filled) = next(iter(self._pending.items()))
            raise CacheError(f"embedding chunk {chunk} incomplete: {int(filled.sum())} of {len(filled)} rows arrived")
        done = self.path / WRITTEN_DIR / f"{self.name}.json"
        done.parent.mkdir(exist_ok=True)
        done.write_text(json.dumps(sorted(self._written)))
        self._closed = True
        return sorted(self._written)


def check_all_chunks_written(path: Path, n: int, chunk_rows: int) -> None:
    counts = np.zeros(-(-n // chunk_rows), dtype=np.int64)
    folder = path / WRITTEN_DIR
    for report in sorted(folder.glob("*.json")) if folder.exists() else []:
        np.add.at(counts, np.asarray(json.loads(report.read_text()), dtype=np.int64), 1)
    if (counts != 1).any():
        missing, twice = np.nonzero(counts == 0)[0], np.nonzero(counts > 1)[0]
        raise CacheError(f"embedding cache incomplete: {len(missing)} of {len(counts)} chunks of {chunk_rows} rows "
                         f"never written (first {missing[:3].tolist()}), {len(twice)} written twice")
    for report in folder.glob("*.json"):
        report.unlink()
    folder.rmdir()


class EmbeddingCache:
    def __init__(self, root: str | Path, spec: dict[str, Any]):
        self.root = Path(root)
        self.spec = {"cache_format": CACHE_FORMAT, **spec}
        if self.spec.get("dtype", "float32") not in DTYPES:
            raise ValueError(f"extract.dtype={self.spec['dtype']!r}; choose one of {DTYPES}")
        self.key = digest(self.spec, 24)
        self.path = self.root / f"{self.key}.zarr"

    def is_complete(self) -> bool:
        return (self.path / COMPLETE_MARKER).exists()

    def problems(self, store_files: dict[str, str] | None = None) -> list[str] | None:
        """What is wrong with the entry: None when it is absent; else an empty list when it is
        complete, its files match the manifest (sha256 of every file, or no manifest recorded) and,
        given the digests the image store's manifest records for its images files (`store_files`),
        it was computed from those very bytes (or recorded none)."""
        if not self.path.exists():
            return None
        if not self.is_complete():
            return [f"no {COMPLETE_MARKER} marker"]
        problems = manifest_problems(self.path, "full") or []
        if problems:
            return problems
        source = recorded_source(self.path)
        stale = changed_source_files(source, store_files)
        if stale:
            return [f"computed from {len(stale)} file(s) of the image store {source.get('store')} whose bytes "
                    f"differ from the ones its manifest records now (first {stale[0]}): computed from a damaged "
                    "or another copy of the store"]
        return []

    def is_intact(self, store_files: dict[str, str] | None = None) -> bool:
        return self.problems(store_files) == []

    def discard(self, reason: str) -> None:
        """Remove a damaged entry (under the lock), saying why."""
        log.warning("embedding cache entry %s is damaged (%s): removing it; it will be built again",
                    self.path, reason)
        discard_directory(self.path)

    def remove_stale_builds(self) -> None:
        """Under the lock: temporary folders of this entry are left by builders that died."""
        for stale in remove_stale_temp_siblings(self.path):
            log.warning("removed %s, left by an interrupted build of this cache entry", stale)

    def load(self) -> np.ndarray:
        """All embeddings as float32 (whatever the storage dtype). An entry holding NaN or
        infinite values is refused (entries are checked when built; this catches older ones)."""
        group = zarr.open_group(self.path, mode="r")
        if group.attrs.get("key") != self.key:
            raise CacheError(f"{self.path} holds key {group.attrs.get('key')!r}, expected {self.key}")
        embeddings = np.asarray(group["embeddings"][:], dtype=np.float32)
        finite = np.isfinite(embeddings).all(axis=1)
        if not finite.all():
            rows = np.nonzero(~finite)[0]
            raise CacheError(f"embedding cache entry {self.path} holds NaN or infinite values in {len(rows)} row(s) "
                             f"(first {rows[:5].tolist()}); delete the entry ({self.path}) and run again")
        return embeddings

    @contextmanager
    def lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            yield

    @contextmanager
    def build(self, n: int, dim: int, chunk_rows: int, source: dict[str, Any] | None = None) -> Iterator[ChunkWriter]:
        """Create a new entry under a temporary name and yield a writer for it (copies of which
        may write from other processes); publish it only if every chunk was written once. `source`:
        the image store it is computed from (`ImageStore.source_record`), recorded in the entry."""
        chunk_rows = max(1, min(int(chunk_rows), max(n, 1)))
        dtype = self.spec.get("dtype", "float32")
        with atomic_directory(self.path, hint="paths.cache_dir") as tmp:
            group = zarr.open_group(tmp, mode="w", zarr_format=3)
            group.create_array("embeddings", shape=(n, dim), chunks=(chunk_rows, dim), dtype=dtype,
                               config={"write_empty_chunks": True})
            writer = ChunkWriter(tmp, n, dim, chunk_rows, dtype, name="main")
            yield writer
            writer.close()
            check_all_chunks_written(tmp, n, chunk_rows)
            group.attrs.update({"key": self.key, "spec": self.spec, **({SOURCE: source} if source else {})})
            write_manifest(tmp)
            (tmp / COMPLETE_MARKER).write_text(self.key + "\n")
