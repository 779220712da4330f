"""Grouped, stratified train/val/test splits: no group (target) is in two splits."""

from __future__ import annotations

import numpy as np

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
