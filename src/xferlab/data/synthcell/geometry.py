"""The geometry of one crop: a centre cell with its nucleus, an irregular neighbourhood (cut by the
crop border when it reaches past it), mitotic and non-expressing cells, and the per-pixel fields
the patterns are drawn from."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter


@dataclass
class CellShape:
    """Size ranges of a cell type, in pixels of the rendered crop."""

    cell_radius: tuple[float, float]
    nucleus_ratio: tuple[float, float]  # nucleus radius / cell radius
    neighbours: tuple[int, int]
    spacing: tuple[float, float]  # centre distance / (sum of radii)
    roughness: float  # amplitude of the outline's low harmonics
    elongation: float = 0.15  # largest axis ratio - 1 of a cell's outline
    mitotic: float = 0.05  # share of cells in mitosis (rounded, condensed chromosomes)
    silent: float = 0.08  # share of cells that do not express the tagged protein


@dataclass
class Layout:
    """Per-pixel fields of a crop (all `(S, S)`) and per-cell parameters."""

    owner: np.ndarray  # index of the cell a pixel belongs to (-1 background)
    rho: np.ndarray  # distance to the own cell centre / cell radius in that direction (<1 inside)
    nu: np.ndarray  # same for the own nucleus (<1 inside); mitotic cells have none
    contact: np.ndarray  # float in [0, 1]: closeness to a boundary between two cells
    centres: np.ndarray  # (n, 2) cell centres (y, x)
    nuclei: np.ndarray  # (n, 2) nucleus centres
    radii: np.ndarray  # (n,) mean cell radii
    nucleus_radii: np.ndarray  # (n,) mean nucleus radii
    nucleoli: list[np.ndarray]  # per cell (m, 2) nucleolus positions (none in mitotic cells)
    mitotic: np.ndarray  # (n,) bool
    condensed: np.ndarray  # (S, S) condensed mitotic chromosomes, in [0, 1]
    seed: int  # the stream of the crop's shared textures (chromatin), so channels agree
    style: Any = None  # the domain's pattern style (`domains.Style`), set by the renderer

    @property
    def inside(self) -> np.ndarray:
        return self.owner >= 0

    @property
    def nucleus(self) -> np.ndarray:
        return self.inside & (self.nu < 1)

    @property
    def cytoplasm(self) -> np.ndarray:
        return self.inside & (self.nu >= 1)

    def cells(self, which: np.ndarray) -> np.ndarray:
        """Mask of the pixels owned by the cells flagged in `which` (n,)."""
        return self.inside & which[np.clip(self.owner, 0, None)]

    @cached_property
    def nucleolus_mask(self) -> np.ndarray:
        """Soft mask of the nucleoli (radius ~0.33 nucleus radii), computed once per crop."""
        out = np.zeros(self.rho.shape, dtype=np.float32)
        for cell, rn in zip(self.nucleoli, self.nucleus_radii):
            for y, x in cell:
                out = np.maximum(out, _blob(out.shape, y, x, 0.33 * rn))
        return out * self.nucleus

    @cached_property
    def chromatin(self) -> np.ndarray:
        """The DNA texture of the nuclei, shared by the Hoechst channel and chromatin-bound proteins:
        fine band-pass granules plus coarser heterochromatin patches, mean ~1."""
        rng = np.random.default_rng([self.seed, 7])
        shape = self.rho.shape
        fine = gaussian_filter(rng.normal(size=shape), 0.8)
        coarse = gaussian_filter(rng.normal(size=shape), 2.0)
        tex = 0.6 * fine / (fine.std() + 1e-8) + 0.8 * coarse / (coarse.std() + 1e-8)
        return np.clip(1 + 0.3 * tex, 0.15, None).astype(np.float32)


def _blob(shape, y: float, x: float, r: float) -> np.ndarray:
    h, w = shape
    out = np.zeros(shape, dtype=np.float32)
    y0, y1 = max(int(y - 3 * r), 0), min(int(y + 3 * r) + 1, h)
    x0, x1 = max(int(x - 3 * r), 0), min(int(x + 3 * r) + 1, w)
    if y0 < y1 and x0 < x1:
        by = (np.arange(y0, y1, dtype=np.float32) - np.float32(y)) ** 2
        bx = (np.arange(x0, x1, dtype=np.float32) - np.float32(x)) ** 2
        out[y0:y1, x0:x1] = np.exp(-(by[:, None] + bx[None]) / np.float32(r * r))
    return out


def _smooth_field(rng, size: int, cells: int = 6) -> np.ndarray:
    """A smooth random field in about [-1, 1]: a `cells x cells` grid of random values, upsampled
    bilinearly. Perturbing distances with it gives irregular, cell-like outlines cheaply."""
    grid = rng.uniform(-1, 1, (cells + 1, cells + 1)).astype(np.float32)
    t = np.linspace(0, cells, size, dtype=np.float32)
    i = np.minimum(t.astype(int), cells - 1)
    f = t - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None] + rows[:, i + 1] * f[None]


def _neighbours(rng, size: int, shape: CellShape, centre: np.ndarray, r0: float, k: int):
    """Up to `k` neighbours at random angles and distances (no regular ring): each candidate is kept
    when it does not overlap a placed cell by more than the spacing allows; clusters and gaps arise."""
    centres, radii = [centre], [r0]
    for _ in range(8 * k):
        if len(centres) > k:
            break
        r = rng.uniform(*shape.cell_radius)
        anchor = int(rng.integers(len(centres)))  # grow from any placed cell: clusters, not rings
        a = rng.uniform(0, 2 * np.pi)
        d = (radii[anchor] + r) * rng.uniform(*shape.spacing)
        c = centres[anchor] + d * np.array([np.sin(a), np.cos(a)])
        if np.abs(c - size / 2).max() > size * 0.5 + r * 0.6:
            continue  # would not reach into the crop
        gaps = [np.hypot(*(c - p)) / (rr + r) for p, rr in zip(centres, radii)]
        if min(gaps) < shape.spacing[0]:
            continue
        centres.append(c)
        radii.append(r)
    return np.array(centres), np.array(radii)


def make_layout(rng: np.random.Generator, size: int, shape: CellShape, density: float = 0.0) -> Layout:
    """A crop's layout. `density` in [-1, 1] shifts the neighbour count (a FOV's confluence)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r0 = rng.uniform(*shape.cell_radius)
    lo, hi = shape.neighbours
    k = int(np.clip(round(rng.integers(lo, hi + 1) + density * (hi - lo) / 2), 0, hi + 1))
    centre = np.array([size / 2, size / 2]) + rng.normal(0, size * 0.03, 2)
    centres, radii = _neighbours(rng, size, shape, centre, r0, k)
    n = len(centres)
    mitotic = rng.random(n) < shape.mitotic
    radii = np.where(mitotic, radii * 0.8, radii)  # mitotic cells round up

    # cells, all at once: (n, S, S); elongated along a random axis, outlines made irregular by a smooth field
    dy = yy[None] - centres[:, 0, None, None].astype(np.float32)
    dx = xx[None] - centres[:, 1, None, None].astype(np.float32)
    theta = rng.uniform(0, np.pi, n)
    stretch = np.where(mitotic, 1.0, 1 + rng.uniform(0, shape.elongation, n))
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    along = (cos * dx + sin * dy) / np.sqrt(stretch)[:, None, None]
    across = (cos * dy - sin * dx) * np.sqrt(stretch)[:, None, None]
    wobble = 1 + np.float32(shape.roughness) * _smooth_field(rng, size)
    rho_all = (np.hypot(along, across) / radii[:, None, None] * wobble).astype(np.float32)

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
    nu_all[mitotic] = 10.0  # the envelope has broken down: no nucleus

    nucleoli = []
    for i in range(n):
        m = 0 if mitotic[i] else int(rng.integers(1, 4))
        ang = rng.uniform(0, 2 * np.pi, m)
        d = rng.uniform(0, 0.45, m) * nucleus_radii[i]
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

    # mitotic chromosomes: a metaphase plate (one bar) or two anaphase bars, across the cell centre
    condensed = np.zeros((size, size), dtype=np.float32)
    for i in np.nonzero(mitotic)[0]:
        a = rng.uniform(0, np.pi)
        u, v = np.cos(a), np.sin(a)
        along_i = (xx - centres[i, 1]) * u + (yy - centres[i, 0]) * v
        across_i = -(xx - centres[i, 1]) * v + (yy - centres[i, 0]) * u
        length, width = nucleus_radii[i] * 1.1, nucleus_radii[i] * 0.28
        offsets = [0.0] if rng.random() < 0.7 else [-0.55 * nucleus_radii[i], 0.55 * nucleus_radii[i]]
        for off in offsets:
            condensed = np.maximum(condensed, np.exp(-((along_i / length) ** 4 + ((across_i - off) / width) ** 2)))
    return Layout(owner=owner, rho=rho, nu=nu, contact=contact.astype(np.float32), centres=centres,
                  nuclei=nuclei, radii=radii, nucleus_radii=nucleus_radii, nucleoli=nucleoli, mitotic=mitotic,
                  condensed=condensed * (owner >= 0), seed=int(rng.integers(2**31)))
