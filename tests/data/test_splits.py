import numpy as np
import pytest

from xferlab.data.splits import TEST, TRAIN, UNUSED, VAL, grouped_split


def make_groups(n_classes=4, groups_per_class=20, samples_per_group=3):
    groups, labels = [], []
    for k in range(n_classes):
        for g in range(groups_per_class):
            groups += [f"c{k}g{g}"] * samples_per_group
            labels += [k] * samples_per_group
    return np.array(groups), np.array(labels)


def test_no_group_is_in_two_splits():
    groups, labels = make_groups()
    split = grouped_split(groups, labels, seed=3)
    for g in np.unique(groups):
        assert len(set(split[groups == g])) == 1, g
    sets = [set(groups[split == s]) for s in (TRAIN, VAL, TEST)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])


def test_split_is_stratified_with_the_requested_fractions():
    groups, labels = make_groups()
    split = grouped_split(groups, labels, val=0.15, test=0.15, seed=0)
    for k in range(4):
        in_class = split[labels == k]
        assert (in_class == TEST).sum() == 3 * 3  # round(0.15 * 20) groups of 3 samples
        assert (in_class == VAL).sum() == 3 * 3
        assert (in_class == TRAIN).sum() == 14 * 3


def test_split_is_deterministic_and_depends_on_its_seed():
    groups, labels = make_groups()
    a = grouped_split(groups, labels, seed=0)
    assert np.array_equal(a, grouped_split(groups, labels, seed=0))
    assert not np.array_equal(a, grouped_split(groups, labels, seed=1))


def test_split_does_not_depend_on_sample_order():
    groups, labels = make_groups()
    order = np.random.default_rng(0).permutation(len(groups))
    a = grouped_split(groups, labels, seed=5)
    b = grouped_split(groups[order], labels[order], seed=5)
    assert np.array_equal(a[order], b)


def test_small_classes_still_reach_every_split_and_unlabelled_are_unused():
    groups = np.array(["a", "b", "c", "d", "u"])
    labels = np.array([0, 0, 0, 0, -1])
    split = grouped_split(groups, labels, seed=0)
    assert set(split[:4]) == {TRAIN, VAL, TEST}
    assert split[4] == UNUSED


def test_a_group_with_two_labels_is_an_error():
    with pytest.raises(ValueError, match="group 'g'"):
        grouped_split(np.array(["g", "g"]), np.array([0, 1]))


def test_every_class_keeps_a_training_group_under_the_default_fractions():
    """1 or 2 groups: all train; 3 or more: one each in val and test at least, the rest (>= 1) train.
    Extreme fractions can leave a class without training groups: the job refuses that (test_train)."""
    for n in range(1, 12):
        split = grouped_split(np.array([f"g{i}" for i in range(n)]), np.zeros(n, dtype=int), seed=n)
        assert (split == TRAIN).sum() >= 1, n
        assert (n < 3) or {VAL, TEST} <= set(split), n
    split = grouped_split(np.array(list("abcd")), np.zeros(4, dtype=int), val=0.45, test=0.45)
    assert (split == TRAIN).sum() == 0
