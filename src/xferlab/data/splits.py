"""Grouped, stratified train/val/test splits: no group (target) is in two splits."""

from __future__ import annotations

import logging
import math

import numpy as np

log = logging.getLogger(__name__)

TRAIN, VAL, TEST, UNUSED = 0, 1, 2, -1
SPLIT_NAMES = {TRAIN: "train", VAL: "val", TEST: "test"}


def grouped_split(
    groups: np.ndarray, labels: np.ndarray, val: float = 0.15, test: float = 0.15, seed: int = 0
) -> np.ndarray:
    """Assign every sample to train (0), val (1) or test (2); unlabelled samples (-1) get -1.

    Groups are split per class (a group's class is the label of its samples), so each split keeps
    the class balance; a class with at least three groups has at least one in val and in test.
    Deterministic under `seed` and independent of the order of the samples.
    """
    groups = np.asarray(groups).astype(str)
    labels = np.asarray(labels)
    if not 0 <= val < 1 or not 0 <= test < 1 or val + test >= 1:
        raise ValueError(f"split fractions val={val}, test={test} must be >= 0 and sum to < 1")
    split = np.full(len(labels), UNUSED, dtype=np.int8)
    labelled = labels >= 0
    group_label: dict[str, int] = {}
    for g, y in zip(groups[labelled].tolist(), labels[labelled].tolist()):
        if group_label.setdefault(g, int(y)) != int(y):
            raise ValueError(
                f"group {g!r} has samples with different labels ({group_label[g]} and {int(y)}): "
                "a grouped split needs one label per group"
            )
    rng = np.random.default_rng(seed)
    assignment: dict[str, int] = {}
    for cls in sorted(set(group_label.values())):
        members = np.array(sorted(g for g, y in group_label.items() if y == cls))
        members = members[rng.permutation(len(members))]
        n = len(members)
        n_test, n_val = int(round(test * n)), int(round(val * n))
        if n >= 3:
            n_test, n_val = max(n_test, 1 if test > 0 else 0), max(n_val, 1 if val > 0 else 0)
        for g in members[:n_test]:
            assignment[str(g)] = TEST
        for g in members[n_test : n_test + n_val]:
            assignment[str(g)] = VAL
        for g in members[n_test + n_val :]:
            assignment[str(g)] = TRAIN
    for i in np.nonzero(labelled)[0]:
        split[i] = assignment[str(groups[i])]
    return split


def store_split(samples, labels: np.ndarray, *, where: str, source: str = "computed", val: float = 0.15,
                test: float = 0.15, seed: int = 0) -> np.ndarray:
    """The split of a store's rows. `source=computed` (default): grouped by target, stratified,
    drawn from `seed`. `source=store`: the split the store was written with (its `split` column).
    `samples` is the store's sample table, `labels` its class indices, `where` names the store."""
    if source == "store":
        if "split" not in samples.columns:
            raise ValueError(f"split.source=store but {where} has no `split` column; use split.source=computed")
        split = samples["split"].to_numpy().astype(np.int8)
        split[labels < 0] = UNUSED
        return split
    if source != "computed":
        raise ValueError(f"split.source={source!r}; choose 'computed' or 'store'")
    if labels.max(initial=-1) < 0:
        raise ValueError(f"{where} has no labelled samples; a classification head needs a labelled dataset")
    return grouped_split(samples["target"].to_numpy(), labels, val=val, test=test, seed=seed)


def check_label_fraction(fraction: float) -> float:
    if not 0 < fraction <= 1:
        raise ValueError(f"label_fraction={fraction}: choose a value in (0, 1]")
    return fraction


def subsample_training(split: np.ndarray, targets: np.ndarray, labels: np.ndarray, fraction: float,
                       seed: int) -> np.ndarray:
    """Keep `fraction` of each class's training targets (at least one), taken from a fixed,
    seeded order of the targets, so a smaller fraction is a subset of a larger one; the other
    training samples are left out (-1). Validation and test stay as they are."""
    if check_label_fraction(fraction) == 1:
        return split
    split = split.copy()
    targets = np.asarray(targets).astype(str)
    rng = np.random.default_rng([int(seed), 1])
    for cls in np.unique(labels[split == TRAIN]):
        members = np.array(sorted(set(targets[(split == TRAIN) & (labels == cls)])))
        order = members[rng.permutation(len(members))]
        keep = set(order[: max(1, math.ceil(fraction * len(order)))])
        drop = (split == TRAIN) & (labels == cls) & ~np.isin(targets, list(keep))
        split[drop] = UNUSED
    return split


def check_class_coverage(split: np.ndarray, labels: np.ndarray, classes: list[str], where: str) -> None:
    """Every class scored on validation or test needs training samples. A single-label class with
    validation or test samples but none in training is an error (the head could never predict
    it); for multilabel data (a class may occur only beside a primary label) it is a warning.
    Classes with no labelled sample at all are logged: they are absent from every split."""
    multilabel = labels.ndim == 2

    def count(code: int) -> np.ndarray:
        rows = split == code
        if multilabel:
            return labels[rows].sum(axis=0)
        return np.bincount(labels[rows & (labels >= 0)], minlength=len(classes))

    train, val, test = count(TRAIN), count(VAL), count(TEST)
    untrained = [f"{c} (val {int(v)}, test {int(t)})" for c, n, v, t in zip(classes, train, val, test)
                 if n == 0 and v + t > 0]
    if untrained:
        message = (f"{where}: class(es) {untrained} have no training sample in this split, so the head cannot "
                   "learn them. With split.source=store fix the store's split column; with a computed split "
                   "lower split.val / split.test (a class needs 3 targets for one each in val and test); "
                   "with a label_fraction every class keeps at least one training target.")
        if not multilabel:
            raise ValueError(message)
        log.warning("%s", message)
    absent = [c for c, n, v, t in zip(classes, train, val, test) if n + v + t == 0]
    if absent:
        log.warning("%s: class(es) %s have no labelled sample in any split; they count as F1 0 under "
                    "metrics.average_over=all and are left out under present", where, absent)
