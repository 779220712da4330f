import logging

import numpy as np
import pytest

from tests.conftest import write_store
from xferlab.data.leakage import SeenTargetsError, check_pretraining_overlap, seen_test_targets
from xferlab.data.splits import TEST, TRAIN, grouped_split


@pytest.fixture
def store_and_split(tmp_path):
    store = write_store(tmp_path / "s.zarr", n_per_class=6)
    split = grouped_split(store.samples["target"].to_numpy(), store.labels, val=0.2, test=0.3, seed=0)
    return store, split


def targets(store, split, code):
    return sorted(set(store.samples["target"].to_numpy()[split == code]))


def test_a_backbone_pretrained_on_training_targets_only_passes(store_and_split):
    store, split = store_and_split
    meta = {"seen": {"targets": targets(store, split, TRAIN)}, "dataset": "s", "split_seed": 0}
    assert check_pretraining_overlap("mine", meta, store, split) == []


def test_seen_test_targets_are_an_error_naming_them_unless_allowed(store_and_split, caplog):
    store, split = store_and_split
    test = targets(store, split, TEST)
    meta = {"seen": {"targets": targets(store, split, TRAIN) + test[:2]}, "dataset": "s", "split_seed": 3}
    with pytest.raises(SeenTargetsError) as err:
        check_pretraining_overlap("mine", meta, store, split)
    message = str(err.value)
    assert all(t in message for t in test[:2]) and not any(t in message for t in test[2:])
    assert "split_seed 3" in message and "allow_seen_test_targets=true" in message
    with caplog.at_level(logging.WARNING):
        assert check_pretraining_overlap("mine", meta, store, split, allow=True) == test[:2]
    assert any(test[0] in r.getMessage() for r in caplog.records)


def test_targets_match_by_ensg_id_too(store_and_split):
    store, split = store_and_split
    store.samples["ensg_id"] = ["ENSG" + t for t in store.samples["target"]]
    test = targets(store, split, TEST)
    seen = {"targets": ["renamed"], "ensg_ids": ["ENSG" + test[0]]}
    assert seen_test_targets(seen, store.samples, split) == [test[0]]


def test_a_checkpoint_that_records_nothing_cannot_be_checked(store_and_split):
    store, split = store_and_split
    assert check_pretraining_overlap("dino", {}, store, split) == []
    assert check_pretraining_overlap("dino", None, store, split) == []
    assert np.any(split == TEST)
