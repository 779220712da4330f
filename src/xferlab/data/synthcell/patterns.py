"""How each OpenCell localisation category looks in the protein channel, drawn from a crop's
layout; plus the HPA reference channels (microtubules, ER) and the Hoechst nucleus channel.

Every pattern is a float image with its bright structures near 1, placed relative to the
nucleus and cell outline as the category appears under a widefield/confocal microscope.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.draw import line_aa

from xferlab.data.synthcell.geometry import Layout

Pattern = Callable[[Layout, np.random.Generator], np.ndarray]


# --- drawing helpers ---------------------------------------------------------------------------

def sample_pixels(rng, mask: np.ndarray, count: int, weight: np.ndarray | None = None) -> np.ndarray:
    """`count` (y, x) positions inside `mask`, with sub-pixel jitter, optionally weighted."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0 or count <= 0:
        return np.zeros((0, 2))
    p = None
    if weight is not None:
        p = weight[ys, xs].astype(np.float64)
        p = p / p.sum() if p.sum() > 0 else None
    pick = rng.choice(len(ys), size=count, p=p)
    return np.stack([ys[pick], xs[pick]], axis=1) + rng.uniform(-0.5, 0.5, (count, 2))


def splat(shape, points: np.ndarray, sigma: float, amplitude=1.0) -> np.ndarray:
    """Gaussian spots of peak ~`amplitude` at `points`."""
    out = np.zeros(shape, dtype=np.float32)
    if len(points) == 0:
        return out
    ij = np.clip(np.round(points).astype(int), 0, np.array(shape) - 1)
    amp = np.broadcast_to(np.asarray(amplitude, dtype=np.float32), (len(points),))
    np.add.at(out, (ij[:, 0], ij[:, 1]), amp)
    return gaussian_filter(out, sigma) * (2 * np.pi * sigma**2)


def ridges(rng, shape, scale: float, width: float = 0.25) -> np.ndarray:
    """A reticular network: the zero-crossings of band-pass noise."""
    noise = rng.normal(size=shape).astype(np.float32)
    band = gaussian_filter(noise, scale) - gaussian_filter(noise, 2 * scale)
    return np.exp(-((band / (width * band.std() + 1e-8)) ** 2))


def strokes(rng, shape, starts: np.ndarray, angles: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Anti-aliased straight line segments."""
    out = np.zeros(shape, dtype=np.float32)
    h, w = shape
    for (y, x), a, n in zip(starts, angles, lengths):
        y1, x1 = y + n * np.sin(a), x + n * np.cos(a)
        rr, cc, val = line_aa(int(round(y)), int(round(x)), int(round(y1)), int(round(x1)))
        ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        np.maximum.at(out, (rr[ok], cc[ok]), val[ok].astype(np.float32))
    return out


def worms(rng, shape, starts: np.ndarray, steps: int, persistence: float = 0.5) -> np.ndarray:
    """Short curved tubules: persistent random walks."""
    out = np.zeros(shape, dtype=np.float32)
    h, w = shape
    for y, x in starts:
        a = rng.uniform(0, 2 * np.pi)
        for _ in range(steps):
            iy, ix = int(round(y)), int(round(x))
            if 0 <= iy < h and 0 <= ix < w:
                out[iy, ix] = 1.0
            a += rng.normal(0, persistence)
            y, x = y + 0.8 * np.sin(a), x + 0.8 * np.cos(a)
    return out


def perinuclear(layout: Layout, decay: float = 0.5) -> np.ndarray:
    return np.exp(-np.clip(layout.nu - 1, 0, None) / decay) * layout.cytoplasm


def nucleolus_points(layout: Layout) -> np.ndarray:
    pts = [p for i, cell in enumerate(layout.nucleoli) for p in cell]
    return np.array(pts) if pts else np.zeros((0, 2))


def nucleolus_mask(layout: Layout) -> np.ndarray:
    return layout.nucleolus_mask


def rim(distance: np.ndarray, at: float = 1.0, width: float = 0.08) -> np.ndarray:
    return np.exp(-(((distance - at) / width) ** 2)).astype(np.float32)


# --- the 17 OpenCell categories ----------------------------------------------------------------

def nucleoplasm(L: Layout, rng) -> np.ndarray:
    texture = 0.85 + 0.15 * gaussian_filter(rng.normal(size=L.rho.shape), 1.0)
    return gaussian_filter(L.nucleus * texture * (1 - 0.7 * nucleolus_mask(L)), 0.6)


def nuclear_membrane(L: Layout, rng) -> np.ndarray:
    return rim(L.nu, 1.0, 0.1) * (L.owner >= 0) + 0.15 * L.nucleus


def nucleolus_gc(L: Layout, rng) -> np.ndarray:
    return nucleolus_mask(L) ** rng.uniform(0.7, 1.4) + 0.08 * L.nucleus


def nucleolus_fc_dfc(L: Layout, rng) -> np.ndarray:
    pts = []
    for cell, rn in zip(L.nucleoli, L.nucleus_radii):
        for p in cell:
            pts.append(p + rng.normal(0, 0.18 * rn, (int(rng.integers(3, 7)), 2)))
    points = np.concatenate(pts) if pts else np.zeros((0, 2))
    return splat(L.rho.shape, points, 0.6) * L.nucleus + 0.05 * L.nucleus


def nuclear_punctae(L: Layout, rng) -> np.ndarray:
    n = int(rng.integers(6, 16)) * len(L.radii)
    dots = splat(L.rho.shape, sample_pixels(rng, L.nucleus & (L.nu < 0.9), n), 0.7, rng.uniform(0.5, 1.0, n))
    return dots * L.nucleus + 0.35 * nucleoplasm(L, rng)


def chromatin(L: Layout, rng) -> np.ndarray:
    return hoechst(L, rng, contrast=0.6)


def cytoplasmic(L: Layout, rng) -> np.ndarray:
    body = gaussian_filter(L.cytoplasm.astype(np.float32), 1.0) * (1.1 - 0.3 * np.clip(L.rho, 0, 1))
    return 0.8 * body + 0.15 * L.nucleus


def cytoskeleton(L: Layout, rng) -> np.ndarray:
    n = int(rng.integers(8, 14)) * len(L.radii)
    starts = sample_pixels(rng, L.inside, n)
    base = rng.uniform(0, np.pi)
    angles = base + rng.normal(0, 0.35, n)
    lines = strokes(rng, L.rho.shape, starts, angles, rng.uniform(6, 16, n))
    return gaussian_filter(lines, 0.5) * L.inside * 1.6


def membrane(L: Layout, rng) -> np.ndarray:
    return np.maximum(rim(L.rho, 0.97, 0.07), L.contact) * (L.rho < 1.1) + 0.05 * L.inside


def cell_contact(L: Layout, rng) -> np.ndarray:
    return L.contact * rng.uniform(0.9, 1.2) + 0.25 * rim(L.rho, 0.97, 0.07) * (L.rho < 1.1) + 0.05 * L.inside


def focal_adhesions(L: Layout, rng) -> np.ndarray:
    n = int(rng.integers(5, 12)) * len(L.radii)
    starts = sample_pixels(rng, L.inside & (L.rho > 0.75), n)
    owners = L.owner[np.clip(starts[:, 0].round().astype(int), 0, L.rho.shape[0] - 1),
                     np.clip(starts[:, 1].round().astype(int), 0, L.rho.shape[1] - 1)]
    centres = L.centres[np.clip(owners, 0, None)]
    angles = np.arctan2(starts[:, 0] - centres[:, 0], starts[:, 1] - centres[:, 1])
    return gaussian_filter(strokes(rng, L.rho.shape, starts, angles, rng.uniform(2, 4, n)), 0.5) * 2.0 + 0.08 * L.inside


def vesicles(L: Layout, rng) -> np.ndarray:
    n = int(rng.integers(15, 35)) * len(L.radii)
    weight = 0.4 + perinuclear(L, 0.7)
    return splat(L.rho.shape, sample_pixels(rng, L.cytoplasm, n, weight), 0.75, rng.uniform(0.4, 1.0, n))


def centrosome(L: Layout, rng) -> np.ndarray:
    pts = []
    for c, nc, rn in zip(L.centres, L.nuclei, L.nucleus_radii):
        a = rng.uniform(0, 2 * np.pi)
        p = nc + (rn * rng.uniform(1.15, 1.4)) * np.array([np.sin(a), np.cos(a)])
        pts += [p, p + rng.normal(0, 0.8, 2)]
    return splat(L.rho.shape, np.array(pts), 0.8) + 0.05 * L.inside


def mitochondria(L: Layout, rng) -> np.ndarray:
    n = int(rng.integers(15, 30)) * len(L.radii)
    starts = sample_pixels(rng, L.cytoplasm, n, 0.3 + perinuclear(L, 0.8))
    return gaussian_filter(worms(rng, L.rho.shape, starts, int(rng.integers(4, 9))), 0.7) * L.cytoplasm * 3.0


def golgi(L: Layout, rng) -> np.ndarray:
    pts = []
    for nc, rn in zip(L.nuclei, L.nucleus_radii):
        a0 = rng.uniform(0, 2 * np.pi)
        a = a0 + rng.normal(0, 0.45, int(rng.integers(5, 10)))
        d = rn * rng.uniform(1.1, 1.45, len(a))
        pts.append(nc + np.stack([d * np.sin(a), d * np.cos(a)], axis=1))
    return splat(L.rho.shape, np.concatenate(pts), 1.0, 0.8) * L.inside


def er(L: Layout, rng) -> np.ndarray:
    net = ridges(rng, L.rho.shape, 1.2)
    return (net * (0.35 + perinuclear(L, 0.6)) * L.cytoplasm + 0.6 * rim(L.nu, 1.0, 0.12) * L.inside) * 0.9


def big_aggregates(L: Layout, rng) -> np.ndarray:
    n = int(rng.integers(1, 3)) * max(1, len(L.radii) // 2)
    return splat(L.rho.shape, sample_pixels(rng, L.cytoplasm, n), rng.uniform(1.5, 2.5), 1.6) + 0.1 * cytoplasmic(L, rng)


CATEGORY_PATTERNS: dict[str, Pattern] = {
    "nucleoplasm": nucleoplasm, "nuclear_membrane": nuclear_membrane, "nucleolus_gc": nucleolus_gc,
    "nucleolus_fc_dfc": nucleolus_fc_dfc, "nuclear_punctae": nuclear_punctae, "chromatin": chromatin,
    "cytoplasmic": cytoplasmic, "cytoskeleton": cytoskeleton, "membrane": membrane, "cell_contact": cell_contact,
    "focal_adhesions": focal_adhesions, "vesicles": vesicles, "centrosome": centrosome,
    "mitochondria": mitochondria, "golgi": golgi, "er": er, "big_aggregates": big_aggregates,
}


# --- reference channels ------------------------------------------------------------------------

def hoechst(L: Layout, rng, contrast: float = 0.35) -> np.ndarray:
    """DNA stain: textured nuclei, dim nucleoli, a slightly brighter periphery."""
    texture = gaussian_filter(rng.normal(size=L.rho.shape), 0.9)
    texture = 1 + contrast * texture / (texture.std() + 1e-8)
    body = L.nucleus * np.clip(texture, 0.2, None) * (1 - 0.55 * nucleolus_mask(L)) * (0.85 + 0.25 * np.clip(L.nu, 0, 1))
    return gaussian_filter(body.astype(np.float32), 0.5)


def microtubules(L: Layout, rng) -> np.ndarray:
    """Filaments radiating from near the nucleus to the cell edge."""
    starts, angles, lengths = [], [], []
    for nc, rc, rn in zip(L.nuclei, L.radii, L.nucleus_radii):
        n = int(rng.integers(14, 22))
        a = rng.uniform(0, 2 * np.pi, n)
        starts.append(nc + (rn * 0.9) * np.stack([np.sin(a), np.cos(a)], axis=1))
        angles.append(a + rng.normal(0, 0.15, n))
        lengths.append(rc * rng.uniform(0.6, 1.0, n))
    lines = strokes(rng, L.rho.shape, np.concatenate(starts), np.concatenate(angles), np.concatenate(lengths))
    return gaussian_filter(lines, 0.6) * L.cytoplasm * 1.5 + 0.1 * L.cytoplasm
