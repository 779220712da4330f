"""The geometry of one crop: a centre cell with its nucleus, neighbours around it (cut by the
crop border when they reach past it), and per-pixel fields the patterns are drawn from."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass
class CellShape:
    """Size ranges of a cell type, in pixels of the rendered crop."""

    cell_radius: tuple[float, float]
    nucleus_ratio: tuple[float, float]  # nucleus radius / cell radius
    neighbours: tuple[int, int]
    spacing: tuple[float, float]  # centre distance / (sum of radii)
    roughness: float  # amplitude of the outline's low harmonics


@dataclass
class Layout:
    """Per-pixel fields of a crop (all `(S, S)`) and per-cell parameters."""

    owner: np.ndarray  # index of the cell a pixel belongs to (-1 background)
    rho: np.ndarray  # distance to the own cell centre / cell radius in that direction (<1 inside)
    nu: np.ndarray  # same for the own nucleus (<1 inside)
    contact: np.ndarray  # float in [0, 1]: closeness to a boundary between two cells
    centres: np.ndarray  # (n, 2) cell centres (y, x)
    nuclei: np.ndarray  # (n, 2) nucleus centres
    radii: np.ndarray  # (n,) mean cell radii
    nucleus_radii: np.ndarray  # (n,) mean nucleus radii
    nucleoli: list[np.ndarray]  # per cell (m, 2) nucleolus positions

    @property
    def inside(self) -> np.ndarray:
        return self.owner >= 0

    @property
    def nucleus(self) -> np.ndarray:
        return self.inside & (self.nu < 1)

    @property
    def cytoplasm(self) -> np.ndarray:
        return self.inside & (self.nu >= 1)

    @cached_property
    def nucleolus_mask(self) -> np.ndarray:
        """Soft mask of the nucleoli (radius ~0.3 nucleus radii), computed once per crop."""
        out = np.zeros(self.rho.shape, dtype=np.float32)
        h, w = out.shape
        for cell, rn in zip(self.nucleoli, self.nucleus_radii):
            r = 0.3 * rn
            for y, x in cell:
                y0, y1 = max(int(y - 3 * r), 0), min(int(y + 3 * r) + 1, h)
                x0, x1 = max(int(x - 3 * r), 0), min(int(x + 3 * r) + 1, w)
                if y0 >= y1 or x0 >= x1:
                    continue
                by = (np.arange(y0, y1, dtype=np.float32) - np.float32(y)) ** 2
                bx = (np.arange(x0, x1, dtype=np.float32) - np.float32(x)) ** 2
                blob = np.exp(-(by[:, None] + bx[None]) / np.float32(r * r))
                out[y0:y1, x0:x1] = np.maximum(out[y0:y1, x0:x1], blob)
        return out * self.nucleus


def _smooth_field(rng, size: int, cells: int = 6) -> np.ndarray:
    """A smooth random field in about [-1, 1]: a `cells x cells` grid of random values, upsampled
    bilinearly. Perturbing distances with it gives irregular, cell-like outlines cheaply."""
    grid = rng.uniform(-1, 1, (cells + 1, cells + 1)).astype(np.float32)
    t = np.linspace(0, cells, size, dtype=np.float32)
    i = np.minimum(t.astype(int), cells - 1)
    f = t - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None] + rows[:, i + 1] * f[None]


def make_layout(rng: np.random.Generator, size: int, shape: CellShape) -> Layout:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r0 = rng.uniform(*shape.cell_radius)
    centres = [np.array([size / 2, size / 2]) + rng.normal(0, size * 0.03, 2)]
    radii = [r0]
    k = int(rng.integers(shape.neighbours[0], shape.neighbours[1] + 1))
    start = rng.uniform(0, 2 * np.pi)
    for j in range(k):
        angle = start + 2 * np.pi * j / max(k, 1) + rng.normal(0, 0.25)
        r = rng.uniform(*shape.cell_radius)
        dist = (r0 + r) * rng.uniform(*shape.spacing)
        centres.append(centres[0] + dist * np.array([np.sin(angle), np.cos(angle)]))
        radii.append(r)
    centres, radii = np.array(centres), np.array(radii)
    n = len(centres)

    # cells, all at once: (n, S, S); outlines made irregular by a smooth random field
    dy = yy[None] - centres[:, 0, None, None].astype(np.float32)
    dx = xx[None] - centres[:, 1, None, None].astype(np.float32)
    wobble = 1 + np.float32(shape.roughness) * _smooth_field(rng, size)
    rho_all = np.hypot(dy, dx) * (1 / radii[:, None, None].astype(np.float32)) * wobble

    # nuclei: slightly eccentric, off-centre ellipses with their own irregularity
    nucleus_radii = radii * rng.uniform(*shape.nucleus_ratio, n)
    nuclei = centres + rng.normal(0, 1, (n, 2)) * (radii[:, None] * 0.08)
    ecc = rng.uniform(0.8, 1.0, n)
    phi = rng.uniform(0, np.pi, n)
    ndy = yy[None] - nuclei[:, 0, None, None].astype(np.float32)
    ndx = xx[None] - nuclei[:, 1, None, None].astype(np.float32)
    c = (np.cos(phi) / nucleus_radii)[:, None, None].astype(np.float32)
    s_ = (np.sin(phi) / nucleus_radii)[:, None, None].astype(np.float32)
    e = (1 / ecc)[:, None, None].astype(np.float32)
    nwobble = 1 + np.float32(shape.roughness * 0.5) * _smooth_field(rng, size, 8)
    nu_all = np.hypot(c * ndx + s_ * ndy, (c * ndy - s_ * ndx) * e) * nwobble

    nucleoli = []
    for i in range(n):
        m = int(rng.integers(1, 4))
        ang = rng.uniform(0, 2 * np.pi, m)
        d = rng.uniform(0, 0.5, m) * nucleus_radii[i]
        nucleoli.append(nuclei[i] + np.stack([d * np.sin(ang), d * np.cos(ang)], axis=1))

    best = rho_all.argmin(axis=0)
    if n > 1:
        two = np.partition(rho_all, 1, axis=0)
        rho, rho2 = two[0], two[1]
    else:
        rho = rho2 = rho_all[0]
    owner = np.where(rho < 1, best, -1)
    nu = np.take_along_axis(nu_all, best[None], 0)[0]
    # a boundary between two cells: both claim the pixel about equally
    contact = np.exp(-(((rho2 - rho) / 0.08) ** 2)) * (rho2 < 1.0) * (rho < 1.0) if n > 1 else np.zeros_like(rho)
    return Layout(owner=owner, rho=rho, nu=nu, contact=contact.astype(np.float32), centres=centres,
                  nuclei=nuclei, radii=radii, nucleus_radii=nucleus_radii, nucleoli=nucleoli)
