"""Render one crop: a layout, a target's mixture of category patterns, and the imaging nuisances.

Nuisances come at three levels, as on a real screen: a plate's (staining and camera gain,
background, focus offset), a field of view's (illumination gradient and vignetting, focus, cell
density, shared by every crop of that FOV), and a crop's (cell-to-cell expression, non-expressing
and mitotic cells, debris, blur, background, Poisson-Gaussian noise, camera gain and offset)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

from xferlab.data.synthcell import patterns
from xferlab.data.synthcell.geometry import CellShape, make_layout

FOV_CROPS = 4  # a field of view is FOV_CROPS x FOV_CROPS crops wide


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
    style: Any = None  # `domains.Style`: how the patterns look

    def scaled(self, size: int) -> "Imaging":
        f = size / 64
        s = self.shape
        return replace(self, shape=replace(s, cell_radius=(s.cell_radius[0] * f, s.cell_radius[1] * f)),
                       blur=(self.blur[0] * f, self.blur[1] * f))


@dataclass(frozen=True)
class Field:
    """The conditions shared by the crops of one field of view (its plate's included)."""

    gain: float  # staining x camera gain factor (plate and FOV)
    background: float
    blur: float  # PSF sigma in px
    photons: float
    tilt: tuple[float, float]  # illumination gradient across the FOV (y, x)
    vignette: float
    density: float  # in [-1, 1]: fewer or more neighbours than usual


def plate_conditions(rng: np.random.Generator) -> dict[str, float]:
    return {"gain": float(rng.lognormal(0.0, 0.2)), "background": float(rng.uniform(-0.01, 0.02)),
            "blur": float(rng.normal(0.0, 0.1))}


def field_conditions(rng: np.random.Generator, imaging: Imaging, plate: dict[str, float]) -> Field:
    return Field(gain=plate["gain"] * float(rng.lognormal(0.0, 0.1)),
                 background=max(0.0, float(rng.uniform(*imaging.background)) + plate["background"]),
                 blur=max(0.3, float(rng.uniform(*imaging.blur)) + plate["blur"]),
                 photons=float(rng.uniform(*imaging.photons)), tilt=tuple(rng.normal(0, 0.25, 2).tolist()),
                 vignette=float(rng.uniform(0.0, 0.35)), density=float(rng.uniform(-1, 1)))


def illumination(field: Field, position: np.ndarray, size: int) -> np.ndarray:
    """The FOV's illumination over the crop at `position` (its centre, in FOV units [0, 1])."""
    t = (np.arange(size, dtype=np.float32) / size - 0.5) / FOV_CROPS
    u = position[0] - 0.5 + t[:, None]
    v = position[1] - 0.5 + t[None, :]
    return (1 + field.tilt[0] * u + field.tilt[1] * v - field.vignette * (u**2 + v**2) * 2).astype(np.float32)


def _mitotic_protein(layout, protein: np.ndarray, mixture: list[tuple[str, float]]) -> np.ndarray:
    """In mitosis the nuclear envelope is gone: a protein spreads through the rounded cell, except
    what binds chromatin, which stays on the condensed chromosomes."""
    if not layout.mitotic.any():
        return protein
    interphase = layout.cells(~layout.mitotic)
    mean = float(protein[interphase].mean()) if interphase.any() else float(protein.mean())
    bound = dict(mixture).get("chromatin", 0.0)
    mitotic = layout.cells(layout.mitotic)
    spread = 0.8 * mean * (1 - layout.condensed) + 2.0 * bound * layout.condensed
    return np.where(mitotic, spread, protein).astype(np.float32)


def _debris(rng, size: int, px: float) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-focus debris in the protein channel and, sometimes, a dead cell's bright fragment in
    the nucleus channel; most crops have none."""
    protein = np.zeros((size, size), np.float32)
    nucleus = np.zeros((size, size), np.float32)
    if rng.random() < 0.2:
        k = int(rng.integers(1, 4))
        pts = rng.uniform(0, size, (k, 2))
        protein = patterns.splat((size, size), pts, px * rng.uniform(1.2, 3.0), rng.uniform(0.4, 2.0, k))
        if rng.random() < 0.4:
            nucleus = patterns.splat((size, size), pts[:1], px * 1.2, 1.5)
    return protein, nucleus


def render_crop(rng: np.random.Generator, imaging: Imaging, mixture: list[tuple[str, float]], level: float,
                size: int, field: Field | None = None, position: np.ndarray | None = None) -> np.ndarray:
    """A `(C, size, size)` uint16 crop of the centre cell and its neighbours. Without a `field`,
    the crop is its own field of view."""
    if field is None:
        field = field_conditions(rng, imaging, {"gain": 1.0, "background": 0.0, "blur": 0.0})
        position = np.array([0.5, 0.5])
    px = size / 64
    layout = make_layout(rng, size, imaging.shape, field.density)
    layout.style = imaging.style
    n = len(layout.radii)
    cell_factor = rng.lognormal(0.0, 0.3, n).astype(np.float32)
    cell_factor[rng.random(n) < imaging.shape.silent] = 0.02  # cells that do not express the tag
    per_cell = np.where(layout.owner >= 0, cell_factor[np.clip(layout.owner, 0, None)], 1.0)

    protein = np.zeros((size, size), dtype=np.float32)
    for category, weight in mixture:
        protein += weight * patterns.CATEGORY_PATTERNS[category](layout, rng)
    protein = _mitotic_protein(layout, protein, mixture) * per_cell * level
    antibody = patterns.style(layout, "antibody")
    if antibody > 0:  # non-specific staining: a haze over cells, brighter in the cytoplasm, and granules
        grains = patterns.splat((size, size), patterns.sample_pixels(rng, layout.inside, int(12 * n)),
                                0.7 * px, rng.uniform(0.3, 1.0, int(12 * n)))
        protein += antibody * (0.7 * layout.cytoplasm + 0.4 * layout.nucleus + 0.8 * grains * layout.inside)
    debris_protein, debris_nucleus = _debris(rng, size, px)

    planes = []
    for channel in imaging.channels:
        if channel == "nucleus":
            planes.append(patterns.hoechst(layout, rng) + debris_nucleus)
        elif channel == "protein":
            planes.append(protein + debris_protein)
        elif channel == "microtubules":
            planes.append(patterns.microtubules(layout, rng))
        elif channel == "er":
            planes.append(patterns.er(layout, rng))
        else:
            raise ValueError(f"SynthCell cannot render channel {channel!r}")
    image = np.stack(planes).astype(np.float32) * illumination(field, position, size)[None] * field.gain

    sigma = field.blur * px * float(rng.uniform(0.9, 1.1))
    image = np.stack([gaussian_filter(p, sigma) for p in image])
    image += field.background + rng.uniform(0.0, 0.01, size=(len(planes), 1, 1)).astype(np.float32)
    image = rng.poisson(np.clip(image, 0, None) * field.photons) / field.photons
    image += rng.normal(0, imaging.read_noise, image.shape)
    counts = image * imaging.gain + imaging.offset
    return np.clip(np.round(counts), 0, 65535).astype(np.uint16)
