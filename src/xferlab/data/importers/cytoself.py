"""cytoself's preprocessed OpenCell crops -> image store.

Input layout (one folder, files per protein)::

    <root>/<protein>_pro.npy       (N, H, W) protein channel, any numeric dtype (100x100 crops)
    <root>/<protein>_nuc.npy       (N, H, W) nucleus channel, same shape
    <root>/<protein>_nucdist.npy   optional nucleus distance map: ignored
    <root>/<protein>_label.csv     N rows: ensg, name, loc_grade1, loc_grade2, loc_grade3, protein_id, FOV_id

Grade columns hold ';'-separated category lists (possibly empty). Channels are stored as
(`nucleus`, `protein`), always as float32 (whatever the input dtype, so proteins with different
dtypes land in one store unchanged in value), resized to `size` if it is set.

Labels (`dataset.labels.from`):
- `annotations` (default): the packaged OpenCell annotations by ENSG id under `labels.rule`;
- `table`: the files' own grade columns. `single_grade3`: proteins with exactly one grade-3
  category; `multilabel`: grade-2 and grade-3 categories, primary class = grade 3 first, then by
  name. Either way, classes with more than `labels.min_targets` proteins are kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd

from xferlab.data.importers.common import (
    DataImportError,
    ImportedSource,
    annotation_labels,
    append_in_blocks,
    check_finite,
    file_inventory,
    known_ensg_ids,
    label_options,
    positive_int,
    read_csv_table,
    require_path,
    resize_image,
    unknown_target_message,
)
from xferlab.data.labels import MULTILABEL_RULES, OPENCELL_CATEGORIES
from xferlab.data.store import StoreWriter

log = logging.getLogger(__name__)

CHANNELS = ("nucleus", "protein")
LABEL_COLUMNS = ("ensg", "name", "loc_grade1", "loc_grade2", "loc_grade3", "protein_id", "FOV_id")
LABEL_SOURCES = ("annotations", "table")
LAYOUT_HINT = "<protein>_pro.npy, <protein>_nuc.npy and <protein>_label.csv per protein"


@dataclass
class Protein:
    """One protein's files and its checked label table."""

    name: str
    pro: Path
    nuc: Path
    table_path: Path
    shape: tuple[int, int, int]
    table: pd.DataFrame

    @property
    def ensg_id(self) -> str:
        return str(self.table["ensg"].iloc[0])


def categories(cell: str) -> frozenset[str]:
    """The categories in one ';'-separated grade cell."""
    return frozenset(part.strip() for part in str(cell).split(";") if part.strip())


def open_array(path: Path) -> np.ndarray:
    """A `.npy` file memory-mapped, or a DataImportError naming it."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as err:
        raise DataImportError(
            f"{path}: cannot be read as a .npy array ({type(err).__name__}: {err}). Replace or remove it."
        ) from err


def check_array(path: Path, array: np.ndarray) -> None:
    if array.ndim != 3:
        raise DataImportError(f"{path}: shape {array.shape}; expected (N, H, W) single-channel crops")
    if array.dtype.kind not in "uif":
        raise DataImportError(f"{path}: dtype {array.dtype}; expected numeric (integer or float) pixels")


def read_label_table(path: Path, n: int) -> pd.DataFrame:
    table = read_csv_table(path, LABEL_COLUMNS, f"a cytoself label table has {list(LABEL_COLUMNS)}")
    if len(table) != n:
        raise DataImportError(
            f"{path}: {len(table)} rows for {n} crops in the matching .npy files; each crop needs one row"
        )
    for column in ("ensg", "name"):
        values = set(table[column])
        if len(values) != 1 or "" in values:
            raise DataImportError(
                f"{path}: column {column} must hold one non-empty value (one protein per file), "
                f"found {sorted(values)[:5]}"
            )
    for column in ("loc_grade2", "loc_grade3"):
        if table[column].map(categories).nunique() != 1:
            raise DataImportError(f"{path}: {column} differs between rows of one protein; fix the table")
    return table


def find_proteins(root: Path) -> list[Protein]:
    """Every protein under `root` with checked, mutually consistent files."""
    pro_files = sorted(root.glob("*_pro.npy"))
    if not pro_files:
        raise DataImportError(f"{root}: no *_pro.npy files. dataset.root must hold {LAYOUT_HINT}")
    names = {p.name[: -len("_pro.npy")] for p in pro_files}
    for nuc in sorted(root.glob("*_nuc.npy")):
        if nuc.name[: -len("_nuc.npy")] not in names:
            pro_name = nuc.name[: -len("_nuc.npy")] + "_pro.npy"
            raise DataImportError(f"{nuc}: no matching {pro_name}; add it or remove this file")
    proteins = []
    for pro in pro_files:
        name = pro.name[: -len("_pro.npy")]
        nuc, table_path = root / f"{name}_nuc.npy", root / f"{name}_label.csv"
        for needed in (nuc, table_path):
            if not needed.exists():
                raise DataImportError(f"{pro}: {needed.name} is missing; every protein needs {LAYOUT_HINT}")
        pro_array, nuc_array = open_array(pro), open_array(nuc)
        check_array(pro, pro_array)
        check_array(nuc, nuc_array)
        if nuc_array.shape != pro_array.shape:
            raise DataImportError(f"{nuc}: shape {nuc_array.shape} differs from {pro.name} {pro_array.shape}")
        table = read_label_table(table_path, pro_array.shape[0])
        proteins.append(Protein(name, pro, nuc, table_path, tuple(pro_array.shape), table))
    return proteins


def table_labels(proteins: list[Protein], rule: str,
                 min_targets: int) -> tuple[list[str], dict[str, tuple[int, list[int]]]]:
    """Classes and per-protein (label, label indices) from the files' own grade columns."""
    if rule == "graded":
        raise DataImportError("dataset.labels.rule=graded needs every annotation grade: use "
                              "dataset.labels.from=annotations (the packaged OpenCell table)")
    grades = {p.name: (categories(p.table["loc_grade2"].iloc[0]), categories(p.table["loc_grade3"].iloc[0]))
              for p in proteins}
    for p in proteins:
        for column, found in zip(("loc_grade2", "loc_grade3"), grades[p.name]):
            unknown = sorted(found - set(OPENCELL_CATEGORIES))
            if unknown:
                raise DataImportError(
                    f"{p.table_path}: {column} names unknown categor(ies) {unknown}; known: "
                    f"{list(OPENCELL_CATEGORIES)}. Correct the table (a typo?) or use dataset.labels.from=annotations."
                )
    if rule == "single_grade3":
        candidates = {name: {next(iter(g3))} for name, (_, g3) in grades.items() if len(g3) == 1}
    else:
        candidates = {name: set(g2 | g3) for name, (g2, g3) in grades.items()}
    counts = pd.Series([c for cats in candidates.values() for c in cats], dtype=object).value_counts()
    classes = sorted(counts[counts > min_targets].index)
    result: dict[str, tuple[int, list[int]]] = {}
    for p in proteins:
        kept = candidates.get(p.name, set()) & set(classes)
        if not kept:
            result[p.name] = (-1, [])
            continue
        g3 = grades[p.name][1]
        primary = sorted(kept, key=lambda c: (c not in g3, c))[0]
        result[p.name] = (classes.index(primary), sorted(classes.index(c) for c in kept))
    return classes, result


class CytoselfSource(ImportedSource):
    """`dataset=cytoself`: cytoself preprocessed crops (see the module docstring), stored as float32."""

    def __init__(
        self,
        name: str,
        root: str | None,
        size: int | None = None,
        labels: Mapping[str, Any] | None = None,
        allow_unknown_targets: bool = False,
    ):
        super().__init__(name)
        self.root = root
        self.size = None if size is None else positive_int(size, "dataset.size")
        self.labels = label_options(labels, extra={"from": "annotations"})
        if self.labels["from"] not in LABEL_SOURCES:
            raise ValueError(f"dataset.labels.from={self.labels['from']!r}; choose one of {LABEL_SOURCES}")
        self.allow_unknown_targets = bool(allow_unknown_targets)

    def scan(self) -> tuple[dict[str, Any], Path]:
        root = require_path(self.root, "dataset.root", self.name, f"a cytoself data folder ({LAYOUT_HINT})")
        inputs = [p for pattern in ("*_pro.npy", "*_nuc.npy", "*_label.csv") for p in root.glob(pattern)]
        spec = {
            "importer": "cytoself",
            "importer_version": 1,
            "root": str(root),
            "inputs": file_inventory(inputs, root),
            "size": self.size,
            "labels": self.labels,
            "allow_unknown_targets": self.allow_unknown_targets,
        }
        return spec, root

    def image_size(self, proteins: list[Protein]) -> int:
        if self.size is not None:
            return self.size
        first = proteins[0]
        for p in proteins:
            if p.shape[1] != p.shape[2] or p.shape[1:] != first.shape[1:]:
                raise DataImportError(
                    f"{p.pro}: crops of {p.shape[1]}x{p.shape[2]} px, but {first.pro.name} has "
                    f"{first.shape[1]}x{first.shape[2]}; a store holds one square size: set dataset.size"
                )
        return first.shape[1]

    def labelling(self, proteins: list[Protein]) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Classes, per-sample labels and multi-hot label sets, in sample order."""
        n = sum(p.shape[0] for p in proteins)
        if self.labels["from"] == "table":
            classes, per_protein = table_labels(proteins, self.labels["rule"], self.labels["min_targets"])
            labels = np.concatenate([np.full(p.shape[0], per_protein[p.name][0]) for p in proteins])
            sets = np.zeros((n, len(classes)), dtype=np.uint8)
            start = 0
            for p in proteins:
                sets[start : start + p.shape[0], per_protein[p.name][1]] = 1
                start += p.shape[0]
            return classes, labels.astype(np.int64), sets
        if not self.allow_unknown_targets:
            known = known_ensg_ids()
            for p in proteins:
                if p.ensg_id not in known:
                    raise DataImportError(unknown_target_message(str(p.table_path), p.ensg_id))
        target_labels = annotation_labels(self.labels)
        ensg_ids = [p.ensg_id for p in proteins for _ in range(p.shape[0])]
        labels, sets = target_labels.for_targets(ensg_ids)
        return list(target_labels.classes), labels, sets

    def images(self, proteins: list[Protein], size: int) -> Iterator[np.ndarray]:
        for p in proteins:
            pro, nuc = open_array(p.pro), open_array(p.nuc)
            for i in range(p.shape[0]):
                check_finite(np.asarray(nuc[i]), f"{p.nuc} crop {i} (sample {p.name}/{i})")
                check_finite(np.asarray(pro[i]), f"{p.pro} crop {i} (sample {p.name}/{i})")
                image = np.stack([nuc[i], pro[i]]).astype(np.float32)
                yield image if image.shape[1:] == (size, size) else resize_image(image, size).astype(np.float32)

    def build(self, path: Path, spec: dict[str, Any], inputs: Path) -> None:
        proteins = find_proteins(inputs)
        size = self.image_size(proteins)
        classes, labels, sets = self.labelling(proteins)
        samples = pd.DataFrame({
            "sample_id": [f"{p.name}/{i}" for p in proteins for i in range(p.shape[0])],
            "target": [str(name) for p in proteins for name in p.table["name"]],
            "ensg_id": [str(e) for p in proteins for e in p.table["ensg"]],
            "protein_id": [str(v) for p in proteins for v in p.table["protein_id"]],
            "fov_id": [str(v) for p in proteins for v in p.table["FOV_id"]],
            "crop_y": -1,
            "crop_x": -1,
            "label": labels,
        })
        with StoreWriter(
            path,
            n_samples=len(samples),
            channel_names=CHANNELS,
            image_size=(size, size),
            dtype="float32",
            classes=classes,
            attrs={"source": spec, "label_rule": self.labels["rule"]},
        ) as writer:
            append_in_blocks(writer, self.images(proteins, size), np.float32)
            writer.write_samples(samples)
            if self.labels["rule"] in MULTILABEL_RULES:
                writer.write_label_sets(sets)
        log.info("%s: %d crops of %d proteins, %d labelled", self.name, len(samples), len(proteins),
                 int((labels >= 0).sum()))
