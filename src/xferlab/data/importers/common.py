"""What the importers share: the source base class (store naming, locking, building once), the error
type, config checks, label resolution, image reading and resizing."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from omegaconf import DictConfig, ListConfig, OmegaConf
from skimage.transform import resize

from xferlab.data.labels import ANNOTATIONS_FILE, RULES, TargetLabels, opencell_annotations, target_labels
from xferlab.data.sources import build_once
from xferlab.data.store import ImageStore, StoreError, StoreWriter
from xferlab.runtime.progress import track
from xferlab.runtime.provenance import digest

log = logging.getLogger(__name__)

BLOCK_ROWS = 256  # images handed to StoreWriter.append at a time
LABEL_DEFAULTS: dict[str, Any] = {"rule": "single_grade3", "min_targets": 15, "min_grade": 2}


class DataImportError(StoreError):
    """Input data that an importer cannot turn into a store: the message names the file and the fix."""


def plain(value: Any) -> Any:
    """A Hydra/OmegaConf node as plain Python (dicts, lists); other values unchanged."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def require_path(value: str | Path | None, key: str, dataset: str, what: str) -> Path:
    """The existing path a config key points at; a clear FileNotFoundError if it is unset or missing."""
    if value is None or str(value).strip() == "":
        raise FileNotFoundError(
            f"dataset={dataset} needs {key}: set {key}=<path> on the command line (or in "
            f"conf/dataset/{dataset}.yaml), pointing at {what}"
        )
    path = Path(value).expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(f"{key}={value}: nothing there ({path}). Point {key} at {what}.")
    return path


def positive_int(value: Any, key: str) -> int:
    """`value` as an int >= 1, or a ValueError naming the config key."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ValueError(f"{key}={value!r}: expected a positive integer")
    return int(value)


def label_options(labels: Mapping[str, Any] | None, *, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The `dataset.labels` block with defaults filled in; unknown keys and rules are refused."""
    defaults = {**LABEL_DEFAULTS, **(extra or {})}
    given = dict(plain(labels) or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"dataset.labels has unknown key(s) {unknown}; known: {sorted(defaults)}")
    options = {**defaults, **given}
    if options["rule"] not in RULES:
        raise ValueError(f"dataset.labels.rule={options['rule']!r}; choose one of {RULES}")
    for key in ("min_targets", "min_grade"):
        if isinstance(options[key], bool) or not isinstance(options[key], int) or options[key] < 0:
            raise ValueError(f"dataset.labels.{key}={options[key]!r}: expected an integer >= 0")
    return options


def annotation_labels(options: Mapping[str, Any]) -> TargetLabels:
    """Per-target labels from the packaged OpenCell annotation table under the configured rule."""
    return target_labels(opencell_annotations(), options["rule"], options["min_targets"], options["min_grade"])


def known_ensg_ids() -> set[str]:
    """Every ENSG id in the packaged OpenCell annotation table."""
    return set(opencell_annotations()["ensg_id"])


def unknown_target_message(where: str, ensg_id: str) -> str:
    return (
        f"{where}: {ensg_id} is not in the OpenCell annotation table ({ANNOTATIONS_FILE}). Check the "
        "ENSG id, remove this target, or set dataset.allow_unknown_targets=true to import it unlabelled."
    )


def file_inventory(paths: Iterable[Path], base: Path) -> str:
    """A digest of the input files (relative path and byte size): a changed input gives a new store."""
    return digest(sorted((str(p.relative_to(base)), p.stat().st_size) for p in paths), 16)


def read_csv_table(path: Path, required: Sequence[str], what: str) -> pd.DataFrame:
    """A CSV read as strings, with its required columns checked; errors name the file."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as err:
        raise DataImportError(f"{path}: cannot be read as CSV ({type(err).__name__}: {err})") from err
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataImportError(f"{path}: lacks column(s) {missing}; {what}")
    return table


def unreadable_tiff(path: Path, err: Exception) -> DataImportError:
    return DataImportError(
        f"{path}: cannot be read as a TIFF ({type(err).__name__}: {err}). Replace it with a valid "
        "TIFF or remove it from the input."
    )


def read_tiff(path: Path) -> np.ndarray:
    """The pixels of a TIFF file, or a DataImportError naming the file."""
    import tifffile

    try:
        return np.asarray(tifffile.imread(path))
    except Exception as err:  # tifffile raises several types for damaged files
        raise unreadable_tiff(path, err) from err


def tiff_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype of the image `read_tiff` returns (the file's first series), read from
    the TIFF's header alone: no pixel is decoded, so checking thousands of files takes seconds."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            return tuple(int(n) for n in series.shape), np.dtype(series.dtype)
    except Exception as err:  # noqa: BLE001 - tifffile raises several types for damaged files
        raise unreadable_tiff(path, err) from err


def check_finite(image: np.ndarray, where: str) -> None:
    """Refuse float pixels that are NaN or infinite (they would make every embedding of the image
    NaN), naming the file or sample and the first bad pixel."""
    if image.dtype.kind != "f":
        return
    bad = ~np.isfinite(image)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataImportError(
            f"{where}: {int(bad.sum())} NaN or infinite pixel value(s) (first at index {first}, value "
            f"{image[first]}). Fix or remove this image in the input: xferlab imports finite pixels only."
        )


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """A `(C, H, W)` image resized to `(C, size, size)` as float64 (anti-aliased, values kept)."""
    image = np.asarray(image, dtype=np.float64)
    if image.shape[1:] == (size, size):
        return image
    return resize(image, (image.shape[0], size, size), order=1, preserve_range=True, anti_aliasing=True)


def to_uint16(image: np.ndarray) -> np.ndarray:
    """Round float pixels back to uint16 (clipped to the uint16 range)."""
    return np.clip(np.rint(image), 0, np.iinfo(np.uint16).max).astype(np.uint16)


def to_dtype(image: np.ndarray, dtype: str | np.dtype) -> np.ndarray:
    """Float pixels (resized) back to the stored dtype: integers rounded and clipped to its range
    (uint16: exactly `to_uint16`), floats as they are."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.asarray(image, dtype=dtype)
    info = np.iinfo(dtype)
    return np.clip(np.rint(image), info.min, info.max).astype(dtype)


def append_in_blocks(writer: StoreWriter, images: Iterator[np.ndarray], dtype: np.dtype | str) -> int:
    """Stack single `(C, H, W)` images into blocks and append them to `writer`; returns the count."""
    block: list[np.ndarray] = []
    count = 0
    for image in track(images, writer.n, "import images", unit="img"):
        block.append(image)
        if len(block) == BLOCK_ROWS:
            writer.append(np.stack(block).astype(dtype, copy=False))
            count += len(block)
            block = []
    if block:
        writer.append(np.stack(block).astype(dtype, copy=False))
        count += len(block)
    return count


def check_channel_names(channels: Sequence[str] | None, key: str = "dataset.channels") -> list[str]:
    names = plain(channels)
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(c, str) and c for c in names):
        raise ValueError(f"{key}={channels!r}: expected a non-empty list of channel names, e.g. [nucleus, protein]")
    if len(set(names)) != len(names):
        raise ValueError(f"{key}={list(names)}: channel names must be unique")
    return list(names)


class ImportedSource(ABC):
    """A dataset built from files on disk into `<data_dir>/<name>-<digest>.zarr` on first use.

    `scan()` checks the config and lists the inputs (cheap; run on every `open`), returning the spec
    (everything the store depends on, including a digest of the input files) and whatever `build`
    needs. The store path is named after `digest(spec, 12)`, so a changed config or input gives a new
    store and an unchanged one is reused. Building happens under a file lock, once.
    """

    def __init__(self, name: str):
        self.name = name

    @abstractmethod
    def scan(self) -> tuple[dict[str, Any], Any]:
        """(spec, inputs): the store's identity and the listed inputs for `build`."""

    @abstractmethod
    def build(self, path: Path, spec: dict[str, Any], inputs: Any) -> None:
        """Write the store at `path` (with StoreWriter, so a failure leaves nothing)."""

    def input_problems(self) -> list[str]:
        """What `build` would refuse that shows without reading pixels (checked before any job
        starts); an importer that can tell overrides this. Empty: nothing found."""
        return []

    def planned_samples(self) -> pd.DataFrame | None:
        """The store's `target` (and `ensg_id`) and `label` columns as the import will write them,
        told from the file list alone (for the check of seen test targets before any job); None
        when the importer cannot tell without importing."""
        return None

    def planned_geometry(self) -> dict[str, Any] | None:
        """The stored images' `image_size` (px), `pixel_size_um` and `whole_field` (whether each is
        a whole field of view) before the import; None when the importer cannot tell."""
        return None

    def store_path(self, data_dir: str | Path) -> Path:
        spec, _ = self.scan()
        return Path(data_dir) / f"{self.name}-{digest(spec, 12)}.zarr"

    def open(self, data_dir: str | Path) -> ImageStore:
        spec, inputs = self.scan()

        def build(path: Path) -> None:
            log.info("importing %s into %s", self.name, path)
            self.build(path, spec, inputs)

        return build_once(Path(data_dir) / f"{self.name}-{digest(spec, 12)}.zarr", build)
