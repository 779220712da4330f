"""A folder of images listed in a CSV -> image store.

The CSV (`dataset.csv`) has one row per image with columns:
- `path`: the image file, relative to the CSV's folder (absolute paths also work);
- `label`: the class name (an empty cell = unlabelled, label -1);
- `group`: what must stay together in a split, e.g. the target protein (stored as `target`);
- `split` (optional): `train`, `val` or `test` (empty = unused), stored as an int column `split`
  (0/1/2, -1 for empty).

Images are TIFF (`.tif`, `.tiff`, read with tifffile) or PNG (`.png`, read with Pillow): 2-D
grayscale when `dataset.channels` has one name, else `(C, H, W)` or `(H, W, C)` with
C == len(channels) (TIFFs are read channel-first when both axes fit; PNGs are channel-last). All
images must share one dtype (so their values are on one scale); they are resized to `size` and stored
as float32 with their values unchanged, and must be finite (NaN or infinite pixels are refused, naming
the file). Classes are the sorted unique label names, or `dataset.classes` when it is set: then a label
outside that list is refused (naming the row), and the list fixes the class order. Sample ids are the
CSV's path strings.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

from xferlab.data.importers.common import (
    DataImportError,
    ImportedSource,
    append_in_blocks,
    check_channel_names,
    check_finite,
    plain,
    positive_int,
    read_csv_table,
    read_tiff,
    require_path,
    resize_image,
)
from xferlab.data.splits import TEST, TRAIN, UNUSED, VAL
from xferlab.data.store import StoreWriter
from xferlab.runtime.provenance import digest

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("path", "label", "group")
SPLIT_CODES = {"train": TRAIN, "val": VAL, "test": TEST, "": UNUSED}
TIFF_SUFFIXES = (".tif", ".tiff")
PNG_SUFFIXES = (".png",)


def read_png(path: Path) -> np.ndarray:
    """The pixels of a PNG file ((H, W) or (H, W, C)), or a DataImportError naming the file."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.mode == "P":
                raise DataImportError(f"{path}: a palette PNG; save it as grayscale or RGB pixel values")
            return np.asarray(image)
    except DataImportError:
        raise
    except Exception as err:
        raise DataImportError(
            f"{path}: cannot be read as a PNG ({type(err).__name__}: {err}). Replace or remove it."
        ) from err


def read_image(path: Path) -> tuple[np.ndarray, bool]:
    """Pixels and whether a 3-D array is channel-last by format (PNG) rather than ambiguous (TIFF)."""
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return read_tiff(path), False
    if suffix in PNG_SUFFIXES:
        return read_png(path), True
    raise DataImportError(f"{path}: unsupported suffix {path.suffix!r}; use {TIFF_SUFFIXES + PNG_SUFFIXES}")


def to_channels_first(image: np.ndarray, path: Path, n_channels: int, channel_last: bool) -> np.ndarray:
    """`image` as `(C, H, W)` with C == n_channels, or a DataImportError naming both counts."""
    if image.ndim == 2:
        if n_channels == 1:
            return image[None]
        raise DataImportError(
            f"{path}: 1 channel (2-D image {image.shape}) but dataset.channels has {n_channels}; "
            "supply multichannel images or set dataset.channels to one name"
        )
    if image.ndim != 3:
        raise DataImportError(f"{path}: {image.ndim}-D image {image.shape}; expected (H, W), (C, H, W) or (H, W, C)")
    if not channel_last and image.shape[0] == n_channels:
        return image
    if image.shape[-1] == n_channels:
        return np.moveaxis(image, -1, 0)
    found = image.shape[-1] if channel_last else min(image.shape[0], image.shape[-1])
    raise DataImportError(
        f"{path}: {found} channels (shape {image.shape}) but dataset.channels has {n_channels}; "
        "make the images and dataset.channels agree"
    )


def check_classes(classes: Sequence[str]) -> list[str]:
    names = plain(classes)
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(c, str) and c.strip() for c in names):
        raise ValueError(f"dataset.classes={classes!r}: expected null or a non-empty list of class names")
    if len(set(names)) != len(names):
        raise ValueError(f"dataset.classes={list(names)}: class names must be unique")
    return [c.strip() for c in names]


def read_table(csv: Path) -> pd.DataFrame:
    """The checked image table: required columns, non-empty paths and groups, unique paths, known splits."""
    table = read_csv_table(csv, REQUIRED_COLUMNS, f"needs {list(REQUIRED_COLUMNS)} (+ optional split)")
    if table.empty:
        raise DataImportError(f"{csv}: no rows; list one image per row with columns {list(REQUIRED_COLUMNS)}")
    for column in ("path", "group"):
        empty = table.index[table[column].str.strip() == ""]
        if len(empty):
            raise DataImportError(f"{csv}: empty {column} in data row {int(empty[0]) + 1}; every image needs one")
    dupes = table["path"][table["path"].duplicated()]
    if len(dupes):
        raise DataImportError(f"{csv}: path {dupes.iloc[0]!r} is listed twice; list each image once")
    if "split" in table.columns:
        bad = sorted(set(table["split"].str.strip()) - set(SPLIT_CODES))
        if bad:
            raise DataImportError(f"{csv}: split values {bad}; use train, val, test or leave the cell empty")
    return table


class FolderSource(ImportedSource):
    """`dataset=folder`: images listed in a CSV (see the module docstring), stored as float32."""

    def __init__(self, name: str, csv: str | None, channels: Sequence[str] = ("nucleus", "protein"),
                 size: int = 64, classes: Sequence[str] | None = None):
        super().__init__(name)
        self.csv = csv
        self.channels = check_channel_names(channels)
        self.size = positive_int(size, "dataset.size")
        self.classes = None if classes is None else check_classes(classes)

    def scan(self) -> tuple[dict[str, Any], tuple[Path, pd.DataFrame, list[Path]]]:
        csv = require_path(self.csv, "dataset.csv", self.name, "an image table (columns path, label, group)")
        if not csv.is_file():
            raise FileNotFoundError(f"dataset.csv={self.csv}: {csv} is not a file; point it at the CSV table")
        table = read_table(csv)
        if self.classes is not None:
            known = set(self.classes)
            for row, name in enumerate(table["label"].str.strip()):
                if name and name not in known:
                    raise DataImportError(
                        f"{csv}: unknown label {name!r} in data row {row + 1}; dataset.classes is {self.classes}. "
                        "Correct the label (a typo?), add the class to dataset.classes, or leave the cell empty "
                        "(unlabelled)."
                    )
        paths = [(csv.parent / p).resolve() for p in table["path"]]
        for row, path in enumerate(paths):
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path}: listed in {csv} (data row {row + 1}) but no such file; fix the path or the row"
                )
        spec = {
            "importer": "folder",
            "importer_version": 1,
            "csv": str(csv),
            "table": digest(table.to_dict(orient="list"), 16),
            "inputs": digest([(str(p), p.stat().st_size) for p in paths], 16),
            "channels": self.channels,
            "size": self.size,
        }
        if self.classes is not None:  # only when set, so stores built before the option keep their names
            spec["classes"] = self.classes
        return spec, (csv, table, paths)

    def images(self, paths: list[Path]) -> Iterator[np.ndarray]:
        first_dtype: tuple[Path, np.dtype] | None = None
        for path in paths:
            image, channel_last = read_image(path)
            if image.dtype.kind not in "uifb":
                raise DataImportError(f"{path}: dtype {image.dtype}; expected numeric pixels")
            if first_dtype is None:
                first_dtype = (path, image.dtype)
            elif image.dtype != first_dtype[1]:
                raise DataImportError(
                    f"{path}: dtype {image.dtype}, but {first_dtype[0].name} is {first_dtype[1]}; all images "
                    "must share one dtype so their values are on one scale. Convert them to one dtype."
                )
            check_finite(image, str(path))
            image = to_channels_first(image, path, len(self.channels), channel_last)
            yield resize_image(image, self.size).astype(np.float32)

    def build(self, path: Path, spec: dict[str, Any], inputs: tuple[Path, pd.DataFrame, list[Path]]) -> None:
        csv, table, paths = inputs
        names = table["label"].str.strip()
        classes = self.classes if self.classes is not None else sorted(set(names) - {""})
        index = {name: i for i, name in enumerate(classes)}
        samples = pd.DataFrame({
            "sample_id": table["path"].tolist(),
            "target": table["group"].str.strip().tolist(),
            "label": np.array([index.get(name, -1) for name in names], dtype=np.int64),
        })
        if "split" in table.columns:
            samples["split"] = np.array([SPLIT_CODES[s.strip()] for s in table["split"]], dtype=np.int64)
        with StoreWriter(
            path,
            n_samples=len(samples),
            channel_names=self.channels,
            image_size=(self.size, self.size),
            dtype="float32",
            classes=classes,
            attrs={"source": spec, "label_rule": "csv_label"},
        ) as writer:
            append_in_blocks(writer, self.images(paths), np.float32)
            writer.write_samples(samples)
        log.info("%s: %d images from %s, %d classes", self.name, len(samples), csv, len(classes))
