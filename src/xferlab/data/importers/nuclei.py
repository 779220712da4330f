"""Nucleus segmentation on a Hoechst image, for crops centred on single nuclei.

Dense HEK293T fields are the hard case: nuclei touch, so a plain threshold merges 5-12 of them
into one component, and a speck of bright debris can pull a global threshold. The steps:

1. Gaussian smoothing (`sigma` px);
2. an Otsu threshold computed on intensities clipped at their `clip_percentile`-th percentile, so
   a few very bright pixels (debris) cannot move it; a field whose foreground is not at least
   `min_contrast` times brighter than its background (mean over mean) has no nucleus (an empty or
   out-of-focus field: Otsu would otherwise split its noise);
3. holes filled, components under `min_area` px dropped;
4. touching nuclei split by a watershed on the distance transform, one marker per local maximum
   at least 0.6 nucleus radii apart (the radius is the field's median inscribed radius of its
   components, which a clump shares with its nuclei);
5. nuclei whose area lies within `area_range` times the field's median nucleus area are kept,
   each with a centre inside it (its centroid, or where it is thickest if the centroid falls outside).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import gaussian, threshold_otsu
from skimage.segmentation import expand_labels, watershed

SEGMENTATION_DEFAULTS: dict[str, Any] = {
    "sigma": 2.0,             # Gaussian smoothing (px) before thresholding
    "min_area": 200,          # smallest component / nucleus kept (px)
    "clip_percentile": 99.9,  # intensities above this percentile do not enter the threshold
    "min_contrast": 1.5,      # foreground / background mean intensity needed to call anything a nucleus
    "split": True,            # watershed split of touching nuclei
    "area_range": [0.5, 2.0],  # kept nuclei: area within these multiples of the field's median nucleus area
}
PEAK_SPACING = 0.6  # watershed markers at least this many nucleus radii apart


@dataclass
class Nuclei:
    """One field's segmentation: a label image, each kept nucleus's centre, and why none were found."""

    labels: np.ndarray                       # (H, W) int32, 0 = background, one id per nucleus
    centres: list[tuple[int, int]]           # (row, col) of the kept nuclei, in raster order of their centres
    areas: np.ndarray                        # area (px) of every nucleus, by id - 1
    median_area: float
    contrast: float
    reason: str | None = None                # why `centres` is empty, when it is
    kept: list[int] = field(default_factory=list)  # ids of the kept nuclei, in the order of `centres`


def check_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """`dataset.segmentation` with defaults filled in; unknown keys and bad values are errors."""
    given = dict(options or {})
    unknown = sorted(set(given) - set(SEGMENTATION_DEFAULTS))
    if unknown:
        raise ValueError(f"dataset.segmentation has unknown key(s) {unknown}; known: {sorted(SEGMENTATION_DEFAULTS)}")
    seg = {**SEGMENTATION_DEFAULTS, **given}
    if float(seg["sigma"]) < 0:
        raise ValueError(f"dataset.segmentation.sigma={seg['sigma']}: expected >= 0")
    min_area = seg["min_area"]
    if isinstance(min_area, bool) or not isinstance(min_area, (int, np.integer)) or min_area < 1:
        raise ValueError(f"dataset.segmentation.min_area={min_area!r}: expected a positive integer")
    if not 50 <= float(seg["clip_percentile"]) <= 100:
        raise ValueError(f"dataset.segmentation.clip_percentile={seg['clip_percentile']}: expected a value in [50, 100]")
    if float(seg["min_contrast"]) < 1:
        raise ValueError(f"dataset.segmentation.min_contrast={seg['min_contrast']}: expected >= 1 "
                         "(foreground mean over background mean)")
    area_range = list(seg["area_range"])
    if len(area_range) != 2 or not 0 <= float(area_range[0]) < 1 < float(area_range[1]):
        raise ValueError(f"dataset.segmentation.area_range={area_range}: expected [low, high] with 0 <= low < 1 < high, "
                         "e.g. [0.5, 2.0]")
    if not isinstance(seg["split"], bool):
        raise ValueError(f"dataset.segmentation.split={seg['split']!r}: expected true or false")
    return {"sigma": float(seg["sigma"]), "min_area": int(min_area), "clip_percentile": float(seg["clip_percentile"]),
            "min_contrast": float(seg["min_contrast"]), "split": seg["split"],
            "area_range": [float(v) for v in area_range]}


def foreground(smoothed: np.ndarray, clip_percentile: float) -> tuple[np.ndarray, float]:
    """The above-threshold mask and its contrast (foreground mean / background mean)."""
    clipped = np.minimum(smoothed, np.percentile(smoothed, clip_percentile))
    if clipped.max() == clipped.min():
        return np.zeros(smoothed.shape, bool), 1.0
    mask = smoothed > threshold_otsu(clipped)
    if mask.all() or not mask.any():
        return mask, 1.0
    background = float(smoothed[~mask].mean())
    return mask, float(smoothed[mask].mean()) / max(background, 1e-12)


def split_touching(mask: np.ndarray, components: np.ndarray, n: int) -> np.ndarray:
    """Watershed of the distance transform, one marker per nucleus-sized maximum of each component."""
    distance = ndi.distance_transform_edt(mask)
    thickest = ndi.maximum(distance, components, index=np.arange(1, n + 1))
    radius = float(np.median(thickest))
    smooth = gaussian(distance, 1.0, preserve_range=True)
    peaks = peak_local_max(smooth, min_distance=max(1, int(round(PEAK_SPACING * radius))),
                           threshold_abs=0.3 * radius, labels=components, exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # every component gets a marker (a small one may have no maximum above threshold_abs)
    unmarked = np.setdiff1d(np.arange(1, n + 1), np.unique(components[markers > 0]))
    for k, comp in enumerate(unmarked, start=len(peaks) + 1):
        y, x = ndi.maximum_position(distance, components, index=int(comp))
        markers[int(y), int(x)] = k
    return watershed(-smooth, markers, mask=mask).astype(np.int32)


def inside_centre(labels: np.ndarray, ident: int, centroid: tuple[float, float], box: tuple[slice, slice]) -> tuple[int, int]:
    """The rounded centroid when it lies in the nucleus, else the nucleus's thickest point."""
    y, x = int(round(centroid[0])), int(round(centroid[1]))
    if labels[y, x] == ident:
        return y, x
    region = labels[box] == ident
    dy, dx = np.unravel_index(np.argmax(ndi.distance_transform_edt(region)), region.shape)
    return int(box[0].start + dy), int(box[1].start + dx)


def segment_nuclei(hoechst: np.ndarray, options: Mapping[str, Any] | None = None) -> Nuclei:
    """Segment the nuclei of one Hoechst image (see the module docstring)."""
    opts = check_options(options)
    smoothed = gaussian(np.asarray(hoechst, dtype=np.float64), sigma=opts["sigma"], preserve_range=True)
    mask, contrast = foreground(smoothed, opts["clip_percentile"])
    empty = np.zeros(mask.shape, np.int32)
    if contrast < opts["min_contrast"]:
        return Nuclei(empty, [], np.zeros(0), 0.0, contrast,
                      f"no nucleus: foreground only {contrast:.2f}x brighter than background "
                      f"(dataset.segmentation.min_contrast={opts['min_contrast']})")
    mask = ndi.binary_fill_holes(mask)
    components, n = ndi.label(mask)
    sizes = np.bincount(components.ravel(), minlength=n + 1)
    mask &= sizes[components] >= opts["min_area"]
    components, n = ndi.label(mask)
    if n == 0:
        return Nuclei(empty, [], np.zeros(0), 0.0, contrast,
                      f"no nucleus: no bright component of at least {opts['min_area']} px "
                      "(dataset.segmentation.min_area)")
    labels = split_touching(mask, components, n) if opts["split"] else components.astype(np.int32)
    areas = np.bincount(labels.ravel(), minlength=int(labels.max()) + 1)[1:].astype(np.float64)
    present = areas >= opts["min_area"]
    median = float(np.median(areas[present])) if present.any() else 0.0
    low, high = (f * median for f in opts["area_range"])
    boxes = ndi.find_objects(labels)
    centroids = ndi.center_of_mass(mask, labels, index=np.arange(1, len(areas) + 1))
    found = []
    for ident, (area, box, centroid) in enumerate(zip(areas, boxes, centroids), start=1):
        if box is not None and area >= opts["min_area"] and low <= area <= high:
            found.append((inside_centre(labels, ident, centroid, box), ident))
    found.sort()
    reason = None if found else f"no nucleus within {opts['area_range']} x the median nucleus area ({median:.0f} px)"
    return Nuclei(labels, [c for c, _ in found], areas, median, contrast, reason, [i for _, i in found])


def cell_territories(nuclei: Nuclei, growth: float) -> np.ndarray:
    """Each nucleus grown by `growth` times the field's median nucleus radius, stopping where it
    meets a neighbour's growth: an approximation of each cell from its nucleus (the Hoechst channel
    shows no cell boundary). 0 outside every cell."""
    radius = float(np.sqrt(nuclei.median_area / np.pi)) if nuclei.median_area > 0 else 0.0
    return expand_labels(nuclei.labels, distance=growth * radius)


def mask_other_cells(image: np.ndarray, territories: np.ndarray, ident: int) -> np.ndarray:
    """`(C, H, W)` image (a crop, with `territories` cut the same way) with every pixel outside
    cell `ident` set to each channel's background: its median outside all cells, or its 1st
    percentile where cells cover the whole image."""
    outside = territories == 0
    out = image.copy()
    other = territories != ident
    for c, plane in enumerate(image):
        background = np.median(plane[outside]) if outside.any() else np.percentile(plane, 1)
        out[c][other] = background
    return out
