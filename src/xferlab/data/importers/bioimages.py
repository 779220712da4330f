"""Fields of view in the formats labs use, read through bioio: OME-TIFF and OME-Zarr with the
readers installed by default (bioio-ome-tiff, bioio-ome-zarr), CZI, ND2 and LIF with the optional
extras `xferlab[czi]`, `xferlab[nd2]`, `xferlab[lif]` (bioio-czi, bioio-nd2, bioio-lif).

`scene_headers` reads what a file says about itself without decoding a pixel: per scene (position)
its channel names, time points, z planes, height, width, dtype and physical pixel size (the reader's
micrometres; None when the file records none). `read_plane` reads one field: one scene, one time
point, the chosen channels, z projected as asked (`max`, `mean`, or a plane's index; a field of
one plane passes through).
Every failure is a DataImportError naming the file and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xferlab.data.importers.common import DataImportError, check_finite

VENDOR_EXTRAS = {".czi": ("czi", "bioio-czi"), ".nd2": ("nd2", "bioio-nd2"), ".lif": ("lif", "bioio-lif")}
FORMAT_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr", ".zarr", ".tiff", ".tif", ".czi", ".nd2", ".lif")
PROJECTIONS = ("max", "mean")


@dataclass(frozen=True)
class SceneHeader:
    """What one scene of a file declares (no pixel read)."""

    scene: int
    scene_name: str
    channels: tuple[str, ...]
    times: int
    planes: int
    height: int
    width: int
    dtype: str
    pixel_size_yx: tuple[float | None, float | None]


def stem(path: Path) -> str:
    """A file's name without its format suffix (`a.ome.tif` -> `a`)."""
    name = path.name
    for suffix in FORMAT_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def open_image(path: Path) -> Any:
    """The file opened by the bioio reader for its format; unsupported, unreadable or a reader not
    installed: a DataImportError naming the file and what to do."""
    from bioio import BioImage
    from bioio_base.exceptions import UnsupportedFileFormatError

    extra = VENDOR_EXTRAS.get(path.suffix.lower())
    try:
        return BioImage(path)
    except UnsupportedFileFormatError as err:
        if extra is not None and not _installed(extra[1]):
            raise DataImportError(
                f"{path}: a {path.suffix} file needs the {extra[1]} reader, which is not installed. Install it "
                f"with `pip install 'xferlab[{extra[0]}]'` (or `pip install {extra[1]}`), or convert the file to "
                "OME-TIFF.") from err
        raise DataImportError(
            f"{path}: cannot be read as a field of view (no installed bioio reader accepts it: damaged, or not "
            "an OME-TIFF / OME-Zarr / CZI / ND2 / LIF file). Re-export it as OME-TIFF (e.g. tifffile.imwrite(..., "
            "ome=True) or Fiji's Bio-Formats exporter), or remove its row from dataset.table.") from err
    except Exception as err:  # noqa: BLE001 - readers raise many types for damaged files
        raise DataImportError(f"{path}: cannot be read ({type(err).__name__}: {err}). Replace the file with an "
                              "intact copy, or remove its row from dataset.table.") from err


def _installed(distribution: str) -> bool:
    from importlib import metadata

    try:
        metadata.version(distribution)
        return True
    except metadata.PackageNotFoundError:
        return False


def _pixel(value: Any) -> float | None:
    return float(value) if value is not None and np.isfinite(float(value)) and float(value) > 0 else None


def scene_headers(path: Path) -> list[SceneHeader]:
    """Every scene's header (see the module docstring)."""
    image = open_image(path)
    headers = []
    try:
        for index, name in enumerate(image.scenes):
            image.set_scene(index)
            dims = image.dims
            sizes = image.physical_pixel_sizes
            headers.append(SceneHeader(index, str(name), tuple(str(c) for c in image.channel_names), int(dims.T),
                                       int(dims.Z), int(dims.Y), int(dims.X), str(np.dtype(image.dtype)),
                                       (_pixel(sizes.Y), _pixel(sizes.X))))
    except DataImportError:
        raise
    except Exception as err:  # noqa: BLE001
        raise DataImportError(f"{path}: its metadata cannot be read ({type(err).__name__}: {err}). Re-export the "
                              "file as OME-TIFF, or remove its row from dataset.table.") from err
    return headers


def projection_option(value: Any) -> str | int:
    """`dataset.z_projection`: max, mean, or the index of one plane."""
    if isinstance(value, str) and value in PROJECTIONS:
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and int(value) >= 0:
        return int(value)
    raise ValueError(f"dataset.z_projection={value!r}: expected max, mean, or the index of one z plane (0, 1, ...)")


def read_plane(path: Path, scene: int, time: int, channels: tuple[int, ...], projection: str | int) -> np.ndarray:
    """One field's `(C, H, W)` pixels: `scene`, time point `time`, the `channels` (file indices, in
    this order), z projected by `projection`."""
    image = open_image(path)
    try:
        image.set_scene(scene)
        data = np.asarray(image.get_image_data("CZYX", T=time))
    except Exception as err:  # noqa: BLE001
        raise DataImportError(f"{path}: scene {scene}, time point {time} cannot be read ({type(err).__name__}: "
                              f"{err}). Replace the file with an intact copy, or remove its row.") from err
    data = data[list(channels)]
    if data.shape[1] == 1:  # a single plane passes through whatever the projection
        data = data[:, 0]
    elif projection == "max":
        data = data.max(axis=1)
    elif projection == "mean":
        data = data.mean(axis=1)
    else:
        if projection >= data.shape[1]:
            raise DataImportError(f"{path}: dataset.z_projection={projection} but the file has {data.shape[1]} z "
                                  "plane(s); choose a plane below that, or max / mean")
        data = data[:, projection]
    check_finite(data, str(path))
    return data
