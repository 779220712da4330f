"""The scale benchmark's release: real labels with every class in every split's reach, and FOVs
that are all different (each a real field rotated, flipped and shifted)."""

from __future__ import annotations

import numpy as np

from xferlab.benchmarks.scale import field_image, study_targets
from xferlab.data.splits import grouped_split


def test_targets_give_every_class_three_or_more_and_a_full_split():
    targets, classes = study_targets(100)
    assert len(targets) == 100 and targets["ensg_id"].is_unique
    per_class = targets.groupby("label").size()
    assert len(per_class) == len(classes) and per_class.min() >= 3
    split = grouped_split(targets["target_name"].to_numpy(), targets["label"].to_numpy(), seed=0)
    assert {0, 1, 2} <= set(split.tolist())
    again, _ = study_targets(100)
    assert again.equals(targets)


def test_every_fov_is_a_different_field():
    rng = np.random.default_rng(0)
    fields = [rng.integers(0, 4000, size=(64, 64)).astype(np.uint16) for _ in range(4)]
    draw = np.random.default_rng(1)
    images = [field_image(fields, k, draw) for k in range(40)]
    assert all(i.shape == (2, 64, 64) and i.dtype == np.uint16 for i in images)
    assert len({i.tobytes() for i in images}) == 40
    assert sorted(np.concatenate([f.ravel() for f in fields]).tolist()) == sorted(
        np.concatenate([i[0].ravel() for i in images[:4]]).tolist())  # the nuclei are the real pixels, moved
