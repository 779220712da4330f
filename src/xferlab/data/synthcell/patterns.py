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
    """Curved tubules: persistent random walks from `starts`, all walked at once."""
    out = np.zeros(shape, dtype=np.float32)
    if len(starts) == 0:
        return out
    h, w = shape
    pos = np.asarray(starts, dtype=np.float64).copy()
    a = rng.uniform(0, 2 * np.pi, len(pos))
    for _ in range(steps):
        iy, ix = np.round(pos[:, 0]).astype(int), np.round(pos[:, 1]).astype(int)
        ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
        out[iy[ok], ix[ok]] = 1.0
        a += rng.normal(0, persistence, len(pos))
        pos += 0.8 * np.stack([np.sin(a), np.cos(a)], axis=1)
    return out


def perinuclear(layout: Layout, decay: float = 0.5) -> np.ndarray:
    return np.exp(-np.clip(layout.nu - 1, 0, None) / decay) * layout.cytoplasm


def nucleolus_mask(layout: Layout) -> np.ndarray:
    return layout.nucleolus_mask


def rim(distance: np.ndarray, at: float = 1.0, width: float = 0.08) -> np.ndarray:
    return np.exp(-(((distance - at) / width) ** 2)).astype(np.float32)


def px(L: Layout) -> float:
    """Pixels per pixel of a 64 px crop: sizes below are for 64 px and scale with the crop."""
    return L.rho.shape[0] / 64


def style(L: Layout, key: str, default: float = 0.0) -> float:
    return float(getattr(L.style, key, default)) if L.style is not None else default


def perinuclear_scale(L: Layout, decay: float) -> np.ndarray:
    """`perinuclear` with the decay stretched by the domain's spread (flat, fixed cells spread out)."""
    return perinuclear(L, decay * style(L, "spread", 1.0))


# --- the 17 OpenCell categories ----------------------------------------------------------------

def nucleoplasm(L: Layout, rng) -> np.ndarray:
    texture = 0.85 + 0.15 * gaussian_filter(rng.normal(size=L.rho.shape), px(L))
    return gaussian_filter(L.nucleus * texture * (1 - 0.75 * nucleolus_mask(L)), 0.6 * px(L))


def nuclear_membrane(L: Layout, rng) -> np.ndarray:
    # a sharp rim, a little nucleoplasm and some of the ER it is continuous with
    return rim(L.nu, 1.0, 0.09) * L.inside + 0.12 * L.nucleus + 0.12 * reticulum(L, rng) * L.cytoplasm


def nucleolus_gc(L: Layout, rng) -> np.ndarray:
    # the granular component: the whole nucleolus, its centre a little dimmer (the FC/DFC it surrounds)
    m = nucleolus_mask(L)
    return np.clip(m * 1.5, 0, 1) ** rng.uniform(0.8, 1.3) * (1 - 0.35 * m**6) + 0.08 * L.nucleus


def nucleolus_fc_dfc(L: Layout, rng) -> np.ndarray:
    # fibrillar centres: several small beads inside each nucleolus, dark between them
    pts = []
    for cell, rn in zip(L.nucleoli, L.nucleus_radii):
        for p in cell:
            k = int(rng.integers(3, 7))
            a = rng.uniform(0, 2 * np.pi, k)
            d = 0.33 * rn * np.sqrt(rng.uniform(0.1, 0.8, k))
            pts.append(p + np.stack([d * np.sin(a), d * np.cos(a)], axis=1))
    points = np.concatenate(pts) if pts else np.zeros((0, 2))
    return splat(L.rho.shape, points, 0.5 * px(L)) * L.nucleus * 1.3 + 0.05 * L.nucleus


def nuclear_punctae(L: Layout, rng) -> np.ndarray:
    # speckles: irregular nuclear blobs of varied size over a nucleoplasmic haze, none in nucleoli
    n = int(rng.integers(8, 18)) * len(L.radii)
    where = L.nucleus & (L.nu < 0.9) & (nucleolus_mask(L) < 0.3)
    sig = px(L) * rng.uniform(0.6, 1.1)
    dots = splat(L.rho.shape, sample_pixels(rng, where, n), sig, rng.uniform(0.4, 1.0, n))
    return dots * L.nucleus + 0.4 * nucleoplasm(L, rng)


def chromatin(L: Layout, rng) -> np.ndarray:
    # chromatin-bound proteins follow the DNA stain: the same texture, a little more contrast
    return hoechst(L, rng) ** rng.uniform(1.1, 1.5)


def cytoplasmic(L: Layout, rng) -> np.ndarray:
    grain = 1 + 0.1 * gaussian_filter(rng.normal(size=L.rho.shape), px(L))
    body = gaussian_filter(L.cytoplasm.astype(np.float32), px(L)) * (1.1 - 0.3 * np.clip(L.rho, 0, 1)) * grain
    return 0.8 * body + 0.15 * L.nucleus


def cytoskeleton(L: Layout, rng) -> np.ndarray:
    n = int(rng.integers(8, 14)) * len(L.radii)
    starts = sample_pixels(rng, L.inside, n)
    base = rng.uniform(0, np.pi)
    angles = base + rng.normal(0, 0.35, n)
    lines = strokes(rng, L.rho.shape, starts, angles, px(L) * rng.uniform(6, 16, n))
    return gaussian_filter(lines, 0.5 * px(L)) * L.inside * 1.6


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
    lines = strokes(rng, L.rho.shape, starts, angles, px(L) * rng.uniform(2, 4, n))
    return gaussian_filter(lines, 0.5 * px(L)) * 2.0 + 0.08 * L.inside


def vesicles(L: Layout, rng) -> np.ndarray:
    # punctae through the cytoplasm, denser near the nucleus
    n = int(rng.integers(15, 35)) * len(L.radii)
    weight = 0.4 + perinuclear_scale(L, 0.7)
    sig = px(L) * 0.75 * style(L, "vesicle_size", 1.0)
    return splat(L.rho.shape, sample_pixels(rng, L.cytoplasm, n, weight), sig, rng.uniform(0.4, 1.0, n))


def centrosome(L: Layout, rng) -> np.ndarray:
    pts = []
    for nc, rn in zip(L.nuclei, L.nucleus_radii):
        a = rng.uniform(0, 2 * np.pi)
        p = nc + (rn * rng.uniform(1.15, 1.4)) * np.array([np.sin(a), np.cos(a)])
        pts += [p, p + rng.normal(0, 0.8 * px(L), 2)]
    return splat(L.rho.shape, np.array(pts), 0.8 * px(L)) + 0.05 * L.inside


def mitochondria(L: Layout, rng) -> np.ndarray:
    # tubules around the nucleus; shorter, fragmented ones in fixed cells
    n = int(rng.integers(15, 30)) * len(L.radii)
    starts = sample_pixels(rng, L.cytoplasm, n, 0.3 + perinuclear_scale(L, 0.8))
    steps = max(2, int(px(L) * rng.uniform(4, 9) * (1 - 0.5 * style(L, "fragment"))))
    return gaussian_filter(worms(rng, L.rho.shape, starts, steps), 0.7 * px(L)) * L.cytoplasm * 3.0


def golgi(L: Layout, rng) -> np.ndarray:
    # a compact perinuclear ribbon of stacks on one side of the nucleus
    pts = []
    for nc, rn in zip(L.nuclei, L.nucleus_radii):
        a0 = rng.uniform(0, 2 * np.pi)
        a = a0 + rng.normal(0, 0.45, int(rng.integers(5, 10)))
        d = rn * rng.uniform(1.1, 1.45, len(a))
        pts.append(nc + np.stack([d * np.sin(a), d * np.cos(a)], axis=1))
    return splat(L.rho.shape, np.concatenate(pts), 1.0 * px(L), 0.8) * L.inside


def reticulum(L: Layout, rng) -> np.ndarray:
    """The ER network: a reticulum through the whole cytoplasm, densest around the nucleus."""
    net = ridges(rng, L.rho.shape, 1.0 * px(L), 0.3)
    return net * (0.7 + 0.4 * perinuclear_scale(L, 0.5))


def er(L: Layout, rng) -> np.ndarray:
    return (reticulum(L, rng) * L.cytoplasm + 0.55 * rim(L.nu, 1.0, 0.12) * L.inside) * 0.9


def big_aggregates(L: Layout, rng) -> np.ndarray:
    n = int(rng.integers(1, 3)) * max(1, len(L.radii) // 2)
    sig = px(L) * rng.uniform(1.5, 2.5)
    return splat(L.rho.shape, sample_pixels(rng, L.cytoplasm, n), sig, 1.6) + 0.1 * cytoplasmic(L, rng)


CATEGORY_PATTERNS: dict[str, Pattern] = {
    "nucleoplasm": nucleoplasm, "nuclear_membrane": nuclear_membrane, "nucleolus_gc": nucleolus_gc,
    "nucleolus_fc_dfc": nucleolus_fc_dfc, "nuclear_punctae": nuclear_punctae, "chromatin": chromatin,
    "cytoplasmic": cytoplasmic, "cytoskeleton": cytoskeleton, "membrane": membrane, "cell_contact": cell_contact,
    "focal_adhesions": focal_adhesions, "vesicles": vesicles, "centrosome": centrosome,
    "mitochondria": mitochondria, "golgi": golgi, "er": er, "big_aggregates": big_aggregates,
}


# --- reference channels ------------------------------------------------------------------------

def hoechst(L: Layout, rng=None) -> np.ndarray:
    """DNA stain: the crop's chromatin texture in the nuclei, dim nucleoli, a slightly brighter
    periphery; condensed, bright chromosomes in mitotic cells."""
    contrast = style(L, "dna_contrast", 1.0)
    tex = 1 + contrast * (L.chromatin - 1)
    body = L.nucleus * tex * (1 - 0.55 * nucleolus_mask(L)) * (0.85 + 0.25 * np.clip(L.nu, 0, 1))
    body = np.maximum(body, 1.8 * L.condensed * np.clip(tex, 0.6, None))
    return gaussian_filter(body.astype(np.float32), 0.5 * px(L))


def microtubules(L: Layout, rng) -> np.ndarray:
    """Curved filaments from the centrosome region through the cytoplasm (persistent random walks)."""
    n = int(rng.integers(25, 40)) * len(L.radii)
    starts = sample_pixels(rng, L.cytoplasm, n, perinuclear(L, 0.4) + 0.05)
    steps = int(px(L) * rng.uniform(10, 18))
    lines = worms(rng, L.rho.shape, starts, steps, persistence=0.18)
    return gaussian_filter(lines, 0.6 * px(L)) * L.cytoplasm * 2.0 + 0.1 * L.cytoplasm
