"""Labels from the real OpenCell annotation table.

Rules (selected by `dataset.labels.rule`):
- `single_grade3`: targets with exactly one grade-3 annotation; classes with more than
  `min_targets` such targets are kept (the ground-truth rule of the OpenCell paper's cytoself
  analysis). On the public table: 12 classes, 825 targets.
- `multilabel`: each target's set of categories annotated with grade >= `min_grade` (default 2),
  restricted to categories with more than `min_targets` targets. The target's primary class
  (highest grade, then name) stratifies the split.
- `graded`: soft targets over the categories with more than `min_targets` annotated targets (any
  grade): each annotated category weighs `GRADE_WEIGHTS[grade]` (3: 1, 2: 0.5, 1: 0.25), as peers
  train on OpenCell. Heads train on the weights (binary cross-entropy); evaluation counts a
  category as present at weight >= 0.5 (grade >= 2, `xferlab.metrics.POSITIVE`). The primary class
  stratifies the split as for `multilabel`.
Targets outside a rule stay in a store as unlabelled (label -1), e.g. for pretraining.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
import pandas as pd

OPENCELL_CATEGORIES = (
    "nucleoplasm", "nuclear_membrane", "nucleolus_gc", "nucleolus_fc_dfc", "nuclear_punctae", "chromatin",
    "cytoplasmic", "cytoskeleton", "membrane", "cell_contact", "focal_adhesions", "vesicles", "centrosome",
    "mitochondria", "golgi", "er", "big_aggregates",
)
RULES = ("single_grade3", "multilabel", "graded")
MULTILABEL_RULES = ("multilabel", "graded")
GRADE_WEIGHTS = {3: 1.0, 2: 0.5, 1: 0.25}
ANNOTATIONS_FILE = "public-annotations-flat-2021-09-29.csv"


ANNOTATION_COLUMNS = ("ensg_id", "target_name", "annotation_name", "annotation_grade")
GRADES = (1, 2, 3)


def check_annotations(table: pd.DataFrame, source: str) -> pd.DataFrame:
    """An OpenCell annotation table with its columns, categories and grades checked; errors name
    `source`, the row and the value, and list what is known."""
    missing = [c for c in ANNOTATION_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{source}: lacks column(s) {missing}; an annotation table has {list(ANNOTATION_COLUMNS)}")
    for column, known in (("annotation_name", OPENCELL_CATEGORIES), ("annotation_grade", GRADES)):
        bad = ~table[column].isin(known)
        if bad.any():
            row = int(np.argmax(bad.to_numpy()))
            values = sorted(map(str, set(table.loc[bad, column])))
            raise ValueError(
                f"{source}: unknown {column} {str(table[column].iloc[row])!r} in data row {row + 1} (all unknown: "
                f"{values[:10]}); known: {list(known)}. Correct the table (a typo?) or remove those rows."
            )
    return table


@lru_cache(maxsize=1)
def opencell_annotations() -> pd.DataFrame:
    """The packaged public OpenCell annotation table (`ensg_id, target_name, annotation_name,
    annotation_grade`)."""
    with resources.files("xferlab.data.resources").joinpath(ANNOTATIONS_FILE).open() as f:
        table = pd.read_csv(f)
    return check_annotations(table, ANNOTATIONS_FILE)


@dataclass(frozen=True)
class TargetLabels:
    """Per-target labels under one rule: `table` has `ensg_id, target_name, label, label_set,
    label_weights` (label: class index or -1; label_set: tuple of class indices; label_weights:
    their weights, 1 except under `graded`)."""

    rule: str
    classes: tuple[str, ...]
    table: pd.DataFrame

    def for_targets(self, ensg_ids) -> tuple[np.ndarray, np.ndarray]:
        """Single labels `(N,)` and label sets `(N, K)` (multi-hot, or grade weights under
        `graded`) for each given ENSG id (unlabelled: -1 and all zeros)."""
        index = self.table.set_index("ensg_id")
        labels = np.full(len(ensg_ids), -1, dtype=np.int64)
        sets = np.zeros((len(ensg_ids), len(self.classes)), dtype=np.float32)
        for i, ensg in enumerate(ensg_ids):
            if ensg in index.index:
                row = index.loc[ensg]
                labels[i] = int(row["label"])
                sets[i, list(row["label_set"])] = row["label_weights"]
        return labels, sets

    def describe(self) -> dict:
        return {"rule": self.rule, "classes": list(self.classes), "n_targets": int((self.table["label"] >= 0).sum())}


def target_labels(annotations: pd.DataFrame, rule: str = "single_grade3", min_targets: int = 15,
                  min_grade: int = 2) -> TargetLabels:
    if rule not in RULES:
        raise ValueError(f"dataset.labels.rule={rule!r}; choose one of {RULES}")
    if rule == "single_grade3":
        top = annotations[annotations["annotation_grade"] == 3]
        per_target = top.groupby("ensg_id")["annotation_name"].agg(list)
        single = per_target[per_target.map(len) == 1].map(lambda names: names[0])
        counts = single.value_counts()
        classes = tuple(sorted(counts[counts > min_targets].index))
        kept = single[single.isin(classes)]
        rows = [(ensg, name, classes.index(name), (classes.index(name),), (1.0,)) for ensg, name in kept.items()]
    else:
        graded = annotations[annotations["annotation_grade"] >= (1 if rule == "graded" else min_grade)]
        counts = graded.groupby("annotation_name")["ensg_id"].nunique()
        classes = tuple(sorted(counts[counts > min_targets].index))
        graded = graded[graded["annotation_name"].isin(classes)]
        rows = []
        for ensg, group in graded.groupby("ensg_id"):
            ordered = group.sort_values(["annotation_grade", "annotation_name"], ascending=[False, True])
            ordered = ordered.drop_duplicates("annotation_name")  # a category's highest grade
            idx = [classes.index(n) for n in ordered["annotation_name"]]
            weights = [GRADE_WEIGHTS[int(g)] if rule == "graded" else 1.0 for g in ordered["annotation_grade"]]
            pairs = sorted(zip(idx, weights))
            rows.append((ensg, None, idx[0], tuple(i for i, _ in pairs), tuple(w for _, w in pairs)))
    names = annotations.drop_duplicates("ensg_id").set_index("ensg_id")["target_name"]
    table = pd.DataFrame(rows, columns=["ensg_id", "target_name", "label", "label_set", "label_weights"])
    table["target_name"] = table["ensg_id"].map(names)
    return TargetLabels(rule=rule, classes=classes, table=table.sort_values("ensg_id").reset_index(drop=True))
