"""SynthCell's imaging domains and the genes rendered in them.

A domain is a point `shift` in [0, 1] between two ends, interpolated continuously:
- 0, OpenCell-like: live HEK293T-like cells (small, dense, large nuclei), the protein seen through
  its endogenous fluorescent tag (no staining background), OpenCell's optics and noise;
- 1, HPA-like: fixed U2OS-like cells (larger, flatter, smaller nuclei, fewer neighbours, seen at
  another pixel size), the protein seen through an antibody stain (non-specific background and
  granules), fixation's look (fragmented mitochondria, organelles spread through the flat cell,
  crisper DNA texture), other optics and noise.
Everything between is a cell line and microscope partway between, so the distance between a
pretraining domain and the evaluation domain (shift 0) is a number.

Genes: `opencell` renders every public OpenCell target, its pattern mixing the categories of its
real annotations weighted by grade (the labelled evaluation set); `hpa` renders genes of the Human
Protein Atlas location table that are *not* OpenCell targets (pretraining images: no evaluated
protein is ever seen), localisation frequencies and co-localisations following HPA.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
import pandas as pd

from xferlab.data.labels import opencell_annotations
from xferlab.data.synthcell.geometry import CellShape
from xferlab.data.synthcell.render import Imaging

GRADE_WEIGHT = {3: 1.0, 2: 0.5, 1: 0.25}
REFERENCE_CHANNELS = ("nucleus", "protein", "microtubules", "er")


@dataclass(frozen=True)
class Style:
    """How the protein patterns look in a domain (read by `patterns`)."""

    antibody: float  # non-specific antibody background, in pattern units
    spread: float  # how far perinuclear organelles spread (1 = OpenCell-like)
    fragment: float  # mitochondrial fragmentation (0 = long tubules)
    vesicle_size: float  # vesicle spot size factor
    dna_contrast: float  # Hoechst texture contrast factor


def _lerp(a, b, t: float):
    if isinstance(a, tuple):
        return tuple(_lerp(x, y, t) for x, y in zip(a, b))
    return a + (b - a) * t


def _geo(a, b, t: float):
    if isinstance(a, tuple):
        return tuple(_geo(x, y, t) for x, y in zip(a, b))
    return float(np.exp(np.log(a) + (np.log(b) - np.log(a)) * t))


def imaging_at(shift: float, channels: tuple[str, ...] = ("nucleus", "protein")) -> Imaging:
    """The domain at `shift` (0 OpenCell-like, 1 HPA-like), for 64 px crops."""
    t = float(shift)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"dataset.domain_shift={shift}: it must lie in [0, 1] (0 OpenCell-like, 1 HPA-like)")
    unknown = [c for c in channels if c not in REFERENCE_CHANNELS]
    if unknown or "protein" not in channels:
        raise ValueError(f"dataset.channels={list(channels)}: SynthCell renders {list(REFERENCE_CHANNELS)} "
                         "and needs protein")
    lo_n, hi_n = _lerp((3.0, 6.0), (1.0, 3.0), t)
    shape = CellShape(cell_radius=_geo((11.0, 15.0), (19.0, 26.0), t), nucleus_ratio=_lerp((0.55, 0.7), (0.35, 0.45), t),
                      neighbours=(int(round(lo_n)), int(round(hi_n))), spacing=_lerp((0.8, 0.98), (0.85, 1.05), t),
                      roughness=_lerp(0.12, 0.2, t), elongation=_lerp(0.15, 0.5, t), mitotic=_lerp(0.05, 0.03, t),
                      silent=_lerp(0.08, 0.02, t))
    style = Style(antibody=_lerp(0.0, 0.14, t), spread=_lerp(1.0, 2.0, t), fragment=t, vesicle_size=_lerp(1.0, 1.3, t),
                  dna_contrast=_lerp(1.0, 1.5, t))
    return Imaging(channels=tuple(channels), shape=shape, style=style, photons=_geo((30.0, 120.0), (120.0, 400.0), t),
                   read_noise=_geo(0.03, 0.015, t), background=_lerp((0.02, 0.08), (0.01, 0.04), t),
                   blur=_lerp((0.5, 1.0), (0.8, 1.4), t), gain=_geo(3000.0, 8000.0, t), offset=_lerp(100.0, 0.0, t))


# HPA location names -> the OpenCell category whose pattern draws them (None: not drawn).
HPA_TO_OPENCELL = {
    "Nucleoplasm": "nucleoplasm", "Nuclear speckles": "nuclear_punctae", "Nuclear bodies": "nuclear_punctae",
    "Nucleoli": "nucleolus_gc", "Nucleoli rim": "nucleolus_gc", "Nucleoli fibrillar center": "nucleolus_fc_dfc",
    "Nuclear membrane": "nuclear_membrane", "Mitotic chromosome": "chromatin", "Kinetochore": "chromatin",
    "Cytosol": "cytoplasmic", "Vesicles": "vesicles", "Endosomes": "vesicles", "Lysosomes": "vesicles",
    "Peroxisomes": "vesicles", "Lipid droplets": "vesicles", "Plasma membrane": "membrane",
    "Cell Junctions": "cell_contact", "Focal adhesion sites": "focal_adhesions",
    "Actin filaments": "cytoskeleton", "Intermediate filaments": "cytoskeleton", "Microtubules": "cytoskeleton",
    "Microtubule ends": "cytoskeleton", "Mitotic spindle": "cytoskeleton", "Cytokinetic bridge": "cytoskeleton",
    "Midbody": "cytoskeleton", "Midbody ring": "cytoskeleton", "Cleavage furrow": "cytoskeleton",
    "Rods & Rings": "cytoskeleton", "Centrosome": "centrosome", "Centriolar satellite": "centrosome",
    "Mitochondria": "mitochondria", "Golgi apparatus": "golgi", "Endoplasmic reticulum": "er",
    "Cytoplasmic bodies": "big_aggregates", "Aggresome": "big_aggregates",
}


@dataclass(frozen=True)
class Target:
    name: str
    ensg_id: str
    mixture: tuple[tuple[str, float], ...]  # (category, weight), weights sum to 1
    description: str  # the annotations it was drawn from


def _normalised(weights: dict[str, float]) -> tuple[tuple[str, float], ...]:
    total = sum(weights.values())
    return tuple((k, round(v / total, 6)) for k, v in sorted(weights.items()))


@lru_cache(maxsize=1)
def opencell_targets() -> tuple[Target, ...]:
    """Every public OpenCell target, its pattern mixture weighted by annotation grade."""
    table = opencell_annotations().sort_values(["ensg_id", "annotation_name"])
    grouped: dict[str, list[tuple[str, str, int]]] = {}
    for ensg, name, category, grade in zip(table["ensg_id"], table["target_name"], table["annotation_name"],
                                           table["annotation_grade"]):
        grouped.setdefault(ensg, []).append((name, category, int(grade)))
    targets = []
    for ensg in sorted(grouped):
        rows = grouped[ensg]
        weights: dict[str, float] = {}
        for _, category, grade in rows:
            weights[category] = weights.get(category, 0) + GRADE_WEIGHT[grade]
        desc = ";".join(f"{category}:{grade}" for _, category, grade in rows)
        targets.append(Target(rows[0][0], ensg, _normalised(weights), desc))
    return tuple(targets)


def hpa_targets(n_genes: int, seed: int) -> list[Target]:
    """`n_genes` HPA genes (reliability other than Uncertain, not an OpenCell target) with a drawable
    location, chosen by `seed`."""
    with resources.files("xferlab.data.resources").joinpath("hpa_subcellular_location_trimmed.tsv").open() as f:
        table = pd.read_csv(f, sep="\t")
    opencell = {t.ensg_id for t in opencell_targets()}
    table = table[(table["Reliability"] != "Uncertain") & ~table.iloc[:, 0].isin(opencell)]
    targets = []
    for row in table.itertuples(index=False):
        weights: dict[str, float] = {}
        for column, w in ((row[3], 1.0), (row[4], 0.5)):
            if isinstance(column, str):
                for loc in column.split(";"):
                    category = HPA_TO_OPENCELL.get(loc)
                    if category:
                        weights[category] = max(weights.get(category, 0), w)
        if weights:
            desc = f"main={row[3]};additional={row[4] if isinstance(row[4], str) else ''}"
            targets.append(Target(str(row[1]), str(row[0]), _normalised(weights), desc))
    if n_genes > len(targets):
        raise ValueError(f"dataset.n_targets={n_genes}: the HPA table has only {len(targets)} usable genes "
                         "that are not OpenCell targets")
    pick = np.sort(np.random.default_rng(seed).choice(len(targets), size=n_genes, replace=False))
    return [targets[i] for i in pick]
