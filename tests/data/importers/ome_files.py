"""Fields of view written in real formats for the `dataset=fovs` tests: OME-TIFF by tifffile's OME
writer (PhysicalSizeX/Y, channel names), OME-Zarr by ome-zarr-py's writer (its scale coordinate
transformation, omero channel labels), and nuclei-like pixels that need no ../shared."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import tifffile


def write_ome_tiff(path: Path, image: np.ndarray, pixel_size_um: float | None, channels: Sequence[str],
                   axes: str = "CYX") -> Path:
    """One OME-TIFF (one scene) of `image` with axes `axes`."""
    metadata: dict = {"axes": axes, "Channel": {"Name": list(channels)}}
    if pixel_size_um is not None:
        metadata.update(PhysicalSizeX=pixel_size_um, PhysicalSizeY=pixel_size_um,
                        PhysicalSizeXUnit="µm", PhysicalSizeYUnit="µm")
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, image, ome=True, metadata=metadata)
    return path


def write_multi_scene(path: Path, scenes: Sequence[np.ndarray], pixel_size_um: float, channels: Sequence[str]) -> Path:
    """One OME-TIFF with a scene (OME Image) per `(C, Y, X)` array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(path, ome=True) as tif:
        for image in scenes:
            tif.write(image, metadata={"axes": "CYX", "PhysicalSizeX": pixel_size_um, "PhysicalSizeY": pixel_size_um,
                                       "Channel": {"Name": list(channels)}})
    return path


def write_ome_zarr(path: Path, image: np.ndarray, pixel_size_um: float, channels: Sequence[str]) -> Path:
    """One OME-Zarr image `(C, Y, X)` with a scale transformation in micrometres and a 2x pyramid level."""
    import zarr
    from ome_zarr.writer import write_image

    root = zarr.open_group(str(path), mode="w")
    window = {"start": 0, "end": int(image.max()), "min": 0, "max": int(np.iinfo(image.dtype).max)}
    write_image(image, group=root, axes="cyx", scale={"c": 1.0, "y": pixel_size_um, "x": pixel_size_um},
                axes_units={"y": "micrometer", "x": "micrometer"}, scale_factors=[2],
                omero={"channels": [{"label": c, "color": "FFFFFF", "window": window} for c in channels]})
    return path


def nuclei_field(seed: int, size: int = 256, n: int = 5, radius: int = 12, protein: int = 300,
                 pattern: str = "ring") -> np.ndarray:
    """A `(2, size, size)` uint16 field: bright disks (nuclei) on a noisy background in channel 0,
    and in channel 1 a protein of brightness `protein` either in a ring around each nucleus
    (`ring`: cytoplasmic) or inside it (`nuclear`)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    hoechst = rng.normal(200, 20, (size, size))
    prot = rng.normal(100, 10, (size, size))
    margin = radius + 34
    placed: list[tuple[int, int]] = []
    while len(placed) < n:
        y, x = (int(v) for v in rng.integers(margin, size - margin, 2))
        if all((y - a) ** 2 + (x - b) ** 2 > (3 * radius) ** 2 for a, b in placed):
            placed.append((y, x))
    for y, x in placed:
        r2 = (yy - y) ** 2 + (xx - x) ** 2
        hoechst[r2 <= radius**2] += 3000
        inside = r2 <= radius**2 if pattern == "nuclear" else (r2 > radius**2) & (r2 <= (2 * radius) ** 2)
        prot[inside] += protein
    return np.clip(np.stack([hoechst, prot]), 0, 65535).astype(np.uint16)
