"""ToyCell: a small built-in synthetic dataset of 2-channel (nucleus, protein) cell crops.

A first, fast stand-in for real OpenCell crops so the whole pipeline runs offline in seconds.
Each *target* (a protein) has one primary localisation class plus a weaker, randomly chosen
secondary pattern, a target-specific expression level, and several crops with their own cell
geometry, blur and Poisson-Gaussian noise. Crops of one target share its label and group, so a
grouped split keeps them together.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter

CLASSES = (
    "nucleoplasm",
    "nucleolus",
    "nuclear_membrane",
    "cytoplasmic",
    "membrane",
    "vesicles",
)
CHANNELS = ("nucleus", "protein")


def _ellipse(yy, xx, cy, cx, ry, rx, theta):
    c, s = np.cos(theta), np.sin(theta)
    dy, dx = yy - cy, xx - cx
    u = (c * dx + s * dy) / rx
    v = (-s * dx + c * dy) / ry
    return np.sqrt(u**2 + v**2)  # < 1 inside


def _puncta(rng, mask, count, size, sigma):
    """Bright spots at random positions inside `mask`."""
    out = np.zeros(mask.shape)
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return out
    pick = rng.integers(0, len(ys), size=count)
    np.add.at(out, (ys[pick], xs[pick]), rng.uniform(0.5, 1.0, size=count))
    return gaussian_filter(out, sigma) * (2 * np.pi * sigma**2) * size


def _pattern(kind: str, rng, cell_r, nuc_r, size) -> np.ndarray:
    nucleus = nuc_r < 1
    cyto = (cell_r < 1) & ~nucleus
    if kind == "nucleoplasm":
        return gaussian_filter(nucleus.astype(float), 1.0) * rng.uniform(0.8, 1.0)
    if kind == "nucleolus":
        return np.clip(_puncta(rng, nuc_r < 0.6, rng.integers(2, 4), 1.0, 1.6), 0, 1.5)
    if kind == "nuclear_membrane":
        return np.exp(-(((nuc_r - 1.0) / 0.12) ** 2))
    if kind == "cytoplasmic":
        return gaussian_filter(cyto.astype(float), 1.5) * 0.7
    if kind == "membrane":
        return np.exp(-(((cell_r - 1.0) / 0.07) ** 2))
    if kind == "vesicles":
        return np.clip(_puncta(rng, cyto, rng.integers(15, 30), 1.0, 0.8), 0, 1.5)
    raise ValueError(f"unknown toycell class {kind!r}; known: {CLASSES}")


def render_crop(rng: np.random.Generator, primary: str, secondary: str, mix: float, level: float, size: int):
    """One `(2, size, size)` float crop in [0, ~1]: nucleus channel and protein channel."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    centre = size / 2 + rng.normal(0, size * 0.05, size=2)
    theta = rng.uniform(0, np.pi)
    cell_ry, cell_rx = size * rng.uniform(0.30, 0.42, size=2)
    nuc_scale = rng.uniform(0.40, 0.55)
    nuc_centre = centre + rng.normal(0, size * 0.03, size=2)
    cell_r = _ellipse(yy, xx, *centre, cell_ry, cell_rx, theta)
    nuc_r = _ellipse(yy, xx, *nuc_centre, cell_ry * nuc_scale, cell_rx * nuc_scale, theta + rng.normal(0, 0.3))

    texture = gaussian_filter(rng.normal(size=(size, size)), 1.2)
    nucleus = gaussian_filter((nuc_r < 1).astype(float), 0.8) * (0.8 + 0.6 * texture)
    protein = (1 - mix) * _pattern(primary, rng, cell_r, nuc_r, size) + mix * _pattern(
        secondary, rng, cell_r, nuc_r, size
    )
    protein = gaussian_filter(protein, rng.uniform(0.5, 1.2)) * level
    image = np.stack([nucleus, protein]).clip(0, None)
    # Poisson-Gaussian camera noise on a background offset.
    photons = rng.uniform(150, 400)
    image = rng.poisson(image * photons + 5.0) / photons + rng.normal(0, 0.02, size=image.shape)
    return image


def generate(n_targets_per_class: int, crops_per_target: int, size: int, seed: int):
    """Render the dataset: uint16 images `(N, 2, size, size)` and a sample table."""
    rng = np.random.default_rng(seed)
    images, rows = [], []
    for class_index, primary in enumerate(CLASSES):
        for t in range(n_targets_per_class):
            target = f"{primary}-{t:03d}"
            secondary = CLASSES[rng.integers(len(CLASSES))]
            mix = rng.uniform(0.0, 0.45)
            level = rng.lognormal(0.0, 0.35)
            for c in range(crops_per_target):
                images.append(render_crop(rng, primary, secondary, mix, level, size))
                rows.append(
                    {"sample_id": f"{target}_{c:02d}", "target": target, "label": class_index,
                     "secondary": secondary, "mix": round(float(mix), 4)}
                )
    stack = np.stack(images)
    scaled = np.clip(stack * 8000.0 + 100.0, 0, 65535).astype(np.uint16)
    return scaled, pd.DataFrame(rows)
