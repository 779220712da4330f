"""Dataset sources: what a `dataset` config builds. Each turns into an opened `ImageStore`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from filelock import FileLock

from xferlab.data import toycell
from xferlab.data.store import ImageStore, StoreDamagedError, StoreWriter
from xferlab.runtime.io import remove_stale_temp_siblings
from xferlab.runtime.provenance import digest

log = logging.getLogger(__name__)


def build_once(path: Path, build: Callable[[Path], None]) -> ImageStore:
    """Open the store at `path`, building it first if it is absent: one process builds (file lock)
    while others wait, then all open the same complete store.

    The builder first removes temporary folders left next to `path` by builders that were killed
    (it holds the lock, so they are dead). A damaged store is refused, not rebuilt: other jobs may be
    reading it, and damage on disk is worth a look; the error says to delete it to rebuild it."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            if not path.exists():
                for stale in remove_stale_temp_siblings(path):
                    log.warning("removed %s, left by an interrupted build of %s", stale, path.name)
                build(path)
    try:
        return ImageStore(path)
    except StoreDamagedError as err:
        raise StoreDamagedError(f"{err} xferlab builds this store from the dataset config: delete {path} "
                                "and run again to rebuild it.") from err


class BuiltSource:
    """A dataset xferlab builds itself: stored at `<data_dir>/<name>-<digest of spec>.zarr`, built on
    first use by one process (file lock) while others wait, then reused."""

    name: str
    spec: dict

    def store_path(self, data_dir: str | Path) -> Path:
        return Path(data_dir) / f"{self.name}-{digest(self.spec, 12)}.zarr"

    def open(self, data_dir: str | Path) -> ImageStore:
        return build_once(self.store_path(data_dir), self.build)

    def build(self, path: Path) -> None:
        raise NotImplementedError


class ToyCellSource(BuiltSource):
    """The built-in synthetic dataset, rendered into `<data_dir>/toycell-<digest>.zarr` on first use."""

    def __init__(self, name: str, n_targets_per_class: int, crops_per_target: int, size: int, seed: int):
        self.name = name
        self.spec = {
            "source": "toycell",
            "generator_version": 1,
            "n_targets_per_class": int(n_targets_per_class),
            "crops_per_target": int(crops_per_target),
            "size": int(size),
            "seed": int(seed),
        }

    def build(self, path: Path) -> None:
        log.info("rendering %s into %s", self.name, path)
        spec = self.spec
        images, samples = toycell.generate(
            spec["n_targets_per_class"], spec["crops_per_target"], spec["size"], spec["seed"]
        )
        with StoreWriter(
            path,
            n_samples=len(images),
            channel_names=toycell.CHANNELS,
            image_size=(spec["size"], spec["size"]),
            dtype="uint16",
            classes=toycell.CLASSES,
            attrs={"source": spec, "label_rule": "primary pattern of each synthetic target"},
        ) as writer:
            for start in range(0, len(images), 256):
                writer.append(images[start : start + 256])
            writer.write_samples(samples)


class StoreSource:
    """An image store already on disk (built by `python -m xferlab.prepare` or an importer)."""

    def __init__(self, name: str, path: str | None):
        self.name = name
        self.path = path

    def open(self, data_dir: str | Path) -> ImageStore:
        if not self.path:
            raise FileNotFoundError(
                "dataset=store needs a path: set dataset.path=/path/to/store.zarr "
                "(build one with `python -m xferlab.prepare dataset=<name>`)"
            )
        path = Path(self.path).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"dataset.path={self.path}: no image store there. Check the path, or build the store "
                "with `python -m xferlab.prepare dataset=<name>` and point dataset.path at it."
            )
        try:
            return ImageStore(path)
        except StoreDamagedError as err:
            raise StoreDamagedError(f"{err} It was given as dataset.path, so xferlab cannot rebuild it: restore "
                                    "it, or rebuild it with the importer that wrote it.") from err
