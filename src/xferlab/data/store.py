"""The image store: the one zarr (v3) format every dataset is written to and the rest reads.

Layout of `<name>.zarr/`:
- `images`: `(N, C, H, W)` array, chunked along N (at most 256 images and 16 MiB a chunk by
  default), each chunk compressed with the writer's codec (`xferlab.data.codecs`);
- `samples/<column>`: one array per column of the per-sample table (`sample_id`, `target`,
  `label`, and whatever else the source records, e.g. `ensg_id`, `fov_id`);
- `label_sets`: optional `(N, K)` multi-hot labels (multilabel rules);
- attributes: format version, channel names, class names, source description, label rule,
  per-channel intensity statistics, optionally `pixel_size_um` (micrometres per stored pixel, when
  the source knows it), a content fingerprint (everything) and an images fingerprint
  (pixels, channel names and sample ids: what embeddings depend on; labels are not part of it);
- `MANIFEST.json`: size and sha256 of every file, recorded when the store is published (see
  `xferlab.runtime.integrity`); checked on every open (sizes; sha256 with `verify="full"`), and every
  file is checked against its sha256 as it is read (`xferlab.data.checked_reads`), so a same-size
  change stops the read. A damaged store is refused, naming the files at fault (and for an image
  chunk, its rows). Stores written before manifests existed open and read unchecked (said once);
- `COMPLETE`: written last; a store without it is incomplete and is refused.

A store is written by `StoreWriter` under a temporary name, its files and folders fsynced, and
renamed into place when complete (`xferlab.runtime.io.atomic_directory`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import zarr

from xferlab.data.checked_reads import (
    CheckedLocalStore,
    StoreDamagedError,
    StoreError,
    image_chunk_digests,
    recorded_digests,
)
from xferlab.data.codecs import DEFAULT_CODEC, compressors
from xferlab.runtime import faults
from xferlab.runtime.integrity import (
    default_level,
    describe,
    file_sha256,
    manifest_problems,
    read_manifest,
    write_manifest,
)
from xferlab.runtime.io import atomic_directory

__all__ = ["ImageStore", "StoreWriter", "StoreError", "StoreDamagedError"]

log = logging.getLogger(__name__)
_unchecked_reads_said: set[str] = set()

FORMAT_VERSION = 1
COMPLETE_MARKER = "COMPLETE"
REQUIRED_COLUMNS = ("sample_id", "target", "label")
UNLABELLED = -1
PIXEL_KINDS = "uif"  # numpy dtype kinds a store may hold: unsigned, signed integers, floats
MAX_CHUNK_ROWS = 256
CHUNK_BYTES = 16 * 2**20  # decoded bytes a chunk holds at most, unless a writer asks for more rows


@contextmanager
def _marker_not_a_node():
    """The COMPLETE marker is a plain file, not a zarr node; zarr warns when it lists the group."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy.*")
        yield


def default_chunk_rows(image_bytes: int) -> int:
    """Images per chunk: 256, or fewer (a power of two) to keep a chunk within CHUNK_BYTES decoded.
    Larger chunks decode slower per core (they leave the CPU caches; `xferlab.benchmarks.codecs`)."""
    fit = max(1, CHUNK_BYTES // max(1, image_bytes))
    return min(MAX_CHUNK_ROWS, 1 << (fit.bit_length() - 1))


class StoreWriter:
    """Write a store row block by row block, then `close()` to publish it atomically.

    Use as a context manager; an exception inside the block leaves nothing behind. `codec` names
    how pixel chunks are compressed (`xferlab.data.codecs`); readers need no setting.

    `n_samples=None`: the number of images is not known before the last one (an importer that cuts
    crops as it reads fields). Images are then compressed and written as they come, and the
    fingerprints, which begin with the number of images, are computed when the store is closed, from
    the pixels written (read back once); they equal those of the same store written with its size known.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        n_samples: int | None,
        channel_names: Sequence[str],
        image_size: tuple[int, int],
        dtype: str | np.dtype,
        classes: Sequence[str],
        attrs: dict[str, Any] | None = None,
        chunk_rows: int | None = None,
        codec: str = DEFAULT_CODEC,
    ):
        self.path = Path(path)
        self.compressors = compressors(codec)  # refuses an unknown name before anything is written
        self.n = None if n_samples is None else int(n_samples)
        self._deferred = self.n is None  # the fingerprints are computed when closing
        self._after_images: list[tuple[str, bytes]] = []  # (which digest, bytes) hashed after the pixels
        self.channel_names = list(channel_names)
        self.classes = list(classes)
        self.dtype = np.dtype(dtype)
        self.image_size = tuple(image_size)
        self.attrs = dict(attrs or {})
        if self.dtype.kind not in PIXEL_KINDS:
            raise StoreError(f"{self.path}: pixel dtype {self.dtype} is not supported; images are stored as "
                             "unsigned or signed integers or floats (e.g. uint8, uint16, float32): convert them")
        if chunk_rows is None:
            chunk_rows = default_chunk_rows(len(self.channel_names) * int(np.prod(image_size)) * self.dtype.itemsize)
        self.chunk_rows = max(1, int(chunk_rows) if self.n is None else min(int(chunk_rows), self.n))
        self._rows_written = 0
        self._flushed = 0
        self._pending: list[np.ndarray] = []
        self._hash = hashlib.sha256()
        self._image_hash = hashlib.sha256()
        self._label_sets: np.ndarray | None = None
        c = len(self.channel_names)
        self._sum = np.zeros(c, dtype=np.float64)
        self._sumsq = np.zeros(c, dtype=np.float64)
        self._ctx = atomic_directory(self.path, hint="paths.data_dir")

    def __enter__(self) -> "StoreWriter":
        if self.path.exists():
            raise StoreError(f"{self.path} already exists; remove it to rebuild the store")
        self._tmp = self._ctx.__enter__()
        self._group = zarr.open_group(self._tmp, mode="w", zarr_format=3)
        h, w = self.image_size
        self._images = self._group.create_array(
            "images",
            shape=(self.n or 0, len(self.channel_names), h, w),
            chunks=(self.chunk_rows, len(self.channel_names), h, w),
            dtype=self.dtype,
            compressors=self.compressors,
        )
        if not self._deferred:
            self._hash_header()
        return self

    def _hash_header(self) -> None:
        header = json.dumps([self.n, self.channel_names, self.image_size, str(self.dtype)]).encode()
        self._hash.update(header)
        self._image_hash.update(header)

    def _hash_after_images(self, which: str, data: bytes) -> None:
        """Hash what follows the pixels into one digest (`fingerprint`: columns, label sets;
        `images`: sample ids): now, or when closing."""
        if self._deferred:
            self._after_images.append((which, data))
            return
        (self._hash if which == "fingerprint" else self._image_hash).update(data)

    @property
    def rows(self) -> int:
        """The number of images: as declared, or (size not known before) as written so far."""
        return self._rows_written if self.n is None else self.n

    def append(self, images: np.ndarray) -> None:
        """Append a block of images `(B, C, H, W)` in sample order."""
        images = np.asarray(images)
        expected = (len(self.channel_names), *self.image_size)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise StoreError(f"image block has shape {images.shape}; expected (B, {expected})")
        if images.dtype != self.dtype:
            raise StoreError(f"image block has dtype {images.dtype}; the store holds {self.dtype}")
        stop = self._rows_written + len(images)
        if images.dtype.kind == "f":
            finite = np.isfinite(images).reshape(len(images), -1).all(axis=1)
            if not finite.all():
                row = self._rows_written + int(np.argmin(finite))
                raise StoreError(
                    f"{self.path}: image {row} (0-based, in writing order) has NaN or infinite pixels; a store "
                    "holds finite pixels only (they would make every embedding of the image NaN). Fix or "
                    "drop that image in the input."
                )
        if self.n is not None and stop > self.n:
            raise StoreError(f"too many images: {stop} written to a store of {self.n}")
        # buffer to whole chunks: writing part of a chunk would re-read and re-compress it
        self._pending.append(images)
        if stop - self._flushed >= self.chunk_rows or stop == self.n:
            self._flush(stop)
        if not self._deferred:
            raw = np.ascontiguousarray(images).tobytes()
            self._hash.update(raw)
            self._image_hash.update(raw)
        for c in range(images.shape[1]):  # per channel, to keep the float64 temporaries small
            plane = images[:, c].astype(np.float64)
            self._sum[c] += plane.sum()
            self._sumsq[c] += np.square(plane).sum()
        self._rows_written = stop

    def _flush(self, stop: int, last: bool = False) -> None:
        block = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        whole = self._flushed + ((stop - self._flushed) // self.chunk_rows) * self.chunk_rows
        cut = stop if last or stop == self.n else whole
        if self._deferred and cut > self._images.shape[0]:
            self._images.resize((cut, *self._images.shape[1:]))
        self._images[self._flushed : cut] = block[: cut - self._flushed]
        rest = block[cut - self._flushed :]
        self._pending = [rest] if len(rest) else []
        self._flushed = cut
        faults.stall_point("store.chunk_written", str(self.path))

    def write_samples(self, samples: pd.DataFrame) -> None:
        missing = [c for c in REQUIRED_COLUMNS if c not in samples.columns]
        if missing:
            raise StoreError(f"sample table lacks column(s) {missing}; required: {list(REQUIRED_COLUMNS)}")
        if len(samples) != self.rows:
            raise StoreError(f"sample table has {len(samples)} rows for {self.rows} images")
        duplicated = samples["sample_id"].duplicated(keep=False).to_numpy()
        if duplicated.any():
            first = samples["sample_id"].iloc[int(np.argmax(duplicated))]
            rows = np.nonzero((samples["sample_id"] == first).to_numpy())[0].tolist()
            count = int(samples["sample_id"][duplicated].nunique())
            raise StoreError(
                f"{self.path}: duplicated sample ids, e.g. {first!r} at rows {rows[:5]} ({count} id(s) repeated): "
                "every sample needs a unique id. Remove the repeated inputs or give them distinct ids."
            )
        self._hash_after_images("images", "\n".join(map(str, samples["sample_id"])).encode())
        labels = samples["label"].to_numpy()
        if len(labels) and (labels.max() >= len(self.classes) or labels.min() < UNLABELLED):
            raise StoreError(f"labels must lie in [-1, {len(self.classes) - 1}] (-1 = unlabelled)")
        group = self._group.require_group("samples")
        for column in samples.columns:
            values = samples[column].to_numpy()
            if values.dtype.kind in "iub":
                data = values.astype(np.int64)
            elif values.dtype.kind == "f":
                data = values.astype(np.float64)
            else:
                data = np.asarray([str(v) for v in values], dtype=np.dtypes.StringDType())
            group.create_array(column, data=data)
            self._hash_after_images("fingerprint", column.encode())
            self._hash_after_images("fingerprint", str(data.tolist()).encode() if data.dtype.kind == "T"
                                    else data.tobytes())
        self._samples_written = True

    def write_label_sets(self, label_sets: np.ndarray) -> None:
        """Multilabel targets `(N, K)` (K = number of classes): multi-hot (stored as uint8), or
        grade weights in [0, 1] (the `graded` rule; stored as float32)."""
        label_sets = np.asarray(label_sets)
        if label_sets.size and (label_sets.min() < 0 or label_sets.max() > 1):
            raise StoreError(f"label_sets hold values outside [0, 1] ({label_sets.min()}..{label_sets.max()}); "
                             "write multi-hot rows or grade weights")
        binary = np.isin(label_sets, (0, 1)).all()
        label_sets = label_sets.astype(np.uint8 if binary else np.float32)
        if label_sets.shape != (self.rows, len(self.classes)):
            raise StoreError(f"label_sets has shape {label_sets.shape}; expected {(self.rows, len(self.classes))}")
        self._group.create_array("label_sets", data=label_sets)
        self._hash_after_images("fingerprint", label_sets.tobytes())

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            try:
                self._finish()
            except BaseException as err:
                self._ctx.__exit__(type(err), err, err.__traceback__)
                raise
        return bool(self._ctx.__exit__(exc_type, exc, tb))

    def _hash_deferred(self) -> None:
        """Size not known before: the last partial chunk written, the size fixed, then the
        fingerprints from the header, the pixels read back in chunks, and what followed them."""
        if self._pending:
            self._flush(self._rows_written, last=True)
        self.n = self._rows_written
        if self._images.shape[0] != self.n:
            self._images.resize((self.n, *self._images.shape[1:]))
        self._hash_header()
        for start in range(0, self.n, self.chunk_rows):
            raw = np.ascontiguousarray(self._images[start : start + self.chunk_rows]).tobytes()
            self._hash.update(raw)
            self._image_hash.update(raw)
        self._deferred = False
        for which, data in self._after_images:
            self._hash_after_images(which, data)

    def _finish(self) -> None:
        if self._deferred:
            self._hash_deferred()
        if self._rows_written != self.n:
            raise StoreError(f"store incomplete: {self._rows_written} of {self.n} images written")
        if not getattr(self, "_samples_written", False):
            raise StoreError("store incomplete: no sample table written")
        count = self.n * self.image_size[0] * self.image_size[1]
        mean = self._sum / max(count, 1)
        std = np.sqrt(np.maximum(self._sumsq / max(count, 1) - mean**2, 0.0))
        self._hash.update(json.dumps([self.classes, self.attrs], sort_keys=True, default=str).encode())
        self._group.attrs.update(
            {
                "xferlab_store_version": FORMAT_VERSION,
                "channel_names": self.channel_names,
                "classes": self.classes,
                "channel_mean": mean.tolist(),
                "channel_std": std.tolist(),
                "fingerprint": self._hash.hexdigest(),
                "images_fingerprint": self._image_hash.hexdigest(),
                **self.attrs,
            }
        )
        write_manifest(self._tmp)
        (self._tmp / COMPLETE_MARKER).write_text(self._hash.hexdigest() + "\n")


class ImageStore:
    """A complete image store, opened read-only. Its files are checked against the manifest at
    `verify` level (`quick`: sizes, `full`: sha256; None: `xferlab.runtime.integrity.default_level()`)
    when opened, and each file against its sha256 whenever it is read (`digests`: path -> sha256,
    None for a store written before manifests)."""

    def __init__(self, path: str | Path, verify: str | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise StoreError(f"no image store at {self.path}")
        if not (self.path / COMPLETE_MARKER).exists():
            raise StoreError(
                f"{self.path} is an incomplete image store (no {COMPLETE_MARKER} marker): "
                "its writer was interrupted. Delete it and build it again."
            )
        problems = manifest_problems(self.path, verify or default_level())
        if problems:
            raise StoreDamagedError(
                f"{self.path} is a damaged image store: {describe(problems)} (checked against the sizes and "
                f"checksums recorded when it was written, verify={verify or default_level()})."
            )
        self.digests: dict[str, str] | None = recorded_digests(read_manifest(self.path))
        if self.digests is None and str(self.path) not in _unchecked_reads_said:
            _unchecked_reads_said.add(str(self.path))
            log.warning("%s records no per-chunk checksums (written before xferlab recorded them): its chunks are "
                        "read unchecked; rebuild the store to have every read checked", self.path)
        self._files = CheckedLocalStore(self.path, self.digests)
        with _marker_not_a_node():
            group = zarr.open_group(self._files, mode="r")
            attrs = dict(group.attrs)
            has_label_sets = "label_sets" in group.array_keys()
        version = attrs.get("xferlab_store_version")
        if version is None:
            raise StoreError(f"{self.path} is not an xferlab image store (no xferlab_store_version)")
        if int(version) > FORMAT_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer xferlab (store format {version}; this one "
                f"reads up to {FORMAT_VERSION}). Upgrade xferlab or rebuild the store."
            )
        self.attrs = attrs
        self.images = group["images"]
        self.channel_names: list[str] = list(attrs["channel_names"])
        self.classes: list[str] = list(attrs["classes"])
        self.fingerprint: str = attrs["fingerprint"]
        self.images_fingerprint: str = attrs["images_fingerprint"]
        self.label_rule: str | None = attrs.get("label_rule")
        self.label_sets: np.ndarray | None = (
            np.asarray(group["label_sets"][:]) if has_label_sets else None
        )
        self.channel_mean = np.asarray(attrs["channel_mean"], dtype=np.float64)
        self.channel_std = np.asarray(attrs["channel_std"], dtype=np.float64)
        samples = group["samples"]
        with _marker_not_a_node():
            names = sorted(samples.array_keys())
        self.samples = pd.DataFrame({name: samples[name][:] for name in names})
        for column in self.samples.columns:
            if self.samples[column].dtype.kind == "T":
                self.samples[column] = self.samples[column].astype(object)
        self._files.n, self._files.chunk_rows = len(self), self.chunk_rows
        self._files.sample_ids = self.samples["sample_id"].to_numpy()

    @property
    def chunk_rows(self) -> int:
        return int(self.images.chunks[0])

    def image_digests(self, compute: bool = False) -> dict[str, str] | None:
        """sha256 of every file of the `images` array (chunks and metadata), as the manifest records
        them; for a store without a manifest, None, or with `compute` the digests of the files as
        they are now (reads every chunk once)."""
        if self.digests is not None:
            return image_chunk_digests(self.digests)
        if not compute:
            return None
        root = self.path / "images"
        return {path.relative_to(self.path).as_posix(): file_sha256(path)
                for path in sorted(root.rglob("*")) if path.is_file()}

    def source_record(self) -> dict[str, Any]:
        """What an embedding cache entry records of the store it is computed from: its path, images
        fingerprint, layout and the sha256 of every images file (see `image_digests`)."""
        return {"store": str(self.path.resolve()), "images_fingerprint": self.images_fingerprint, "n": len(self),
                "chunk_rows": self.chunk_rows, "files": self.image_digests(compute=True)}

    def checked_files(self) -> CheckedLocalStore:
        """A zarr store over this store's files that checks each one as it is read (for readers in
        other processes: DataLoader workers, DDP ranks); open `images` in it."""
        return CheckedLocalStore(self.path, self.digests, n=len(self), chunk_rows=self.chunk_rows,
                                 sample_ids=self._files.sample_ids)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def labels(self) -> np.ndarray:
        return self.samples["label"].to_numpy(dtype=np.int64)

    @property
    def pixel_size_um(self) -> float | None:
        """Micrometres per stored pixel, or None when the source did not record it."""
        value = self.attrs.get("pixel_size_um")
        return None if value is None else float(value)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.images[start:stop])

    def __repr__(self) -> str:
        return (
            f"ImageStore({self.path}, n={len(self)}, channels={self.channel_names}, "
            f"size={self.image_size}, classes={len(self.classes)})"
        )
