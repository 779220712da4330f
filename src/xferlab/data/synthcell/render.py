"""Render one crop: a layout, a target's mixture of category patterns, and the imaging nuisances
(cell-to-cell expression, blur, background, Poisson-Gaussian noise, camera gain and offset)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.ndimage import gaussian_filter

from xferlab.data.synthcell import patterns
from xferlab.data.synthcell.geometry import CellShape, make_layout


@dataclass(frozen=True)
class Imaging:
    """A domain's cells and microscope. Sizes are for 64 px crops and scale with the crop size."""

    channels: tuple[str, ...]
    shape: CellShape
    photons: tuple[float, float]  # detected photons per unit of pattern intensity
    read_noise: float  # Gaussian noise, in pattern units
    background: tuple[float, float]
    blur: tuple[float, float]  # PSF sigma in px
    gain: float  # camera counts per pattern unit
    offset: float  # camera offset in counts

    def scaled(self, size: int) -> "Imaging":
        f = size / 64
        s = self.shape
        return replace(self, shape=replace(s, cell_radius=(s.cell_radius[0] * f, s.cell_radius[1] * f)),
                       blur=(self.blur[0] * f, self.blur[1] * f))


def render_crop(rng: np.random.Generator, imaging: Imaging, mixture: list[tuple[str, float]], level: float,
                size: int) -> np.ndarray:
    """A `(C, size, size)` uint16 crop of the centre cell and its neighbours."""
    layout = make_layout(rng, size, imaging.shape)
    cell_factor = rng.lognormal(0.0, 0.3, len(layout.radii)).astype(np.float32)
    per_cell = np.where(layout.owner >= 0, cell_factor[np.clip(layout.owner, 0, None)], 1.0)

    protein = np.zeros((size, size), dtype=np.float32)
    for category, weight in mixture:
        protein += weight * patterns.CATEGORY_PATTERNS[category](layout, rng)
    protein *= per_cell * level

    planes = []
    for channel in imaging.channels:
        if channel == "nucleus":
            planes.append(patterns.hoechst(layout, rng))
        elif channel == "protein":
            planes.append(protein)
        elif channel == "microtubules":
            planes.append(patterns.microtubules(layout, rng))
        elif channel == "er":
            planes.append(patterns.er(layout, rng))
        else:
            raise ValueError(f"SynthCell cannot render channel {channel!r}")
    image = np.stack(planes).astype(np.float32)

    sigma = rng.uniform(*imaging.blur)
    image = np.stack([gaussian_filter(p, sigma) for p in image])
    image += rng.uniform(*imaging.background, size=(len(planes), 1, 1)).astype(np.float32)
    photons = rng.uniform(*imaging.photons)
    image = rng.poisson(np.clip(image, 0, None) * photons) / photons
    image += rng.normal(0, imaging.read_noise, image.shape)
    counts = image * imaging.gain + imaging.offset
    return np.clip(np.round(counts), 0, 65535).astype(np.uint16)
