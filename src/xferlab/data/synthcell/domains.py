"""The two SynthCell domains and the targets rendered in each.

- `opencell`: the labelled target domain. HEK293T-like cells (small, dense, large nuclei),
  channels nucleus + protein, one entry per real OpenCell target whose protein pattern mixes the
  categories of its real annotations, weighted by grade.
- `hpa`: an unlabelled source domain for pretraining. U2OS-like cells (larger, flatter, smaller
  nuclei, fewer neighbours), another pixel size and noise, channels nucleus, protein, microtubules,
  ER; genes drawn from the Human Protein Atlas location table, so localisation frequencies and
  co-localisations follow HPA.
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

IMAGING = {
    "opencell": Imaging(
        channels=("nucleus", "protein"),
        shape=CellShape(cell_radius=(10.0, 14.0), nucleus_ratio=(0.55, 0.7), neighbours=(3, 6),
                        spacing=(0.8, 0.98), roughness=0.12),
        photons=(30.0, 120.0), read_noise=0.03, background=(0.02, 0.08), blur=(0.5, 1.0), gain=3000.0, offset=100.0,
    ),
    "hpa": Imaging(
        channels=("nucleus", "protein", "microtubules", "er"),
        shape=CellShape(cell_radius=(19.0, 26.0), nucleus_ratio=(0.35, 0.45), neighbours=(1, 3),
                        spacing=(0.85, 1.0), roughness=0.18),
        photons=(120.0, 400.0), read_noise=0.015, background=(0.01, 0.04), blur=(0.8, 1.4), gain=8000.0, offset=0.0,
    ),
}

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
    """`n_genes` HPA genes (reliability other than Uncertain) with a drawable location, chosen by `seed`."""
    with resources.files("xferlab.data.resources").joinpath("hpa_subcellular_location_trimmed.tsv").open() as f:
        table = pd.read_csv(f, sep="\t")
    table = table[table["Reliability"] != "Uncertain"]
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
        raise ValueError(f"dataset.n_targets={n_genes}: the HPA table has only {len(targets)} usable genes")
    pick = np.sort(np.random.default_rng(seed).choice(len(targets), size=n_genes, replace=False))
    return [targets[i] for i in pick]
