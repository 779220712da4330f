import numpy as np
import pytest

from xferlab.data.labels import opencell_annotations, target_labels
from xferlab.data.synthcell.domains import HPA_TO_OPENCELL, hpa_targets, opencell_targets
from xferlab.data.synthcell.source import SynthCellSource


def test_every_opencell_target_with_grade_weighted_mixtures():
    targets = opencell_targets()
    assert len(targets) == 1310
    aamp = next(t for t in targets if t.name == "AAMP")  # cytoplasmic 3, nucleoplasm 1
    assert dict(aamp.mixture) == pytest.approx({"cytoplasmic": 0.8, "nucleoplasm": 0.2})
    assert all(abs(sum(w for _, w in t.mixture) - 1) < 1e-4 for t in targets)


def test_hpa_targets_follow_hpa_frequencies():
    targets = hpa_targets(1000, seed=0)
    assert len({t.ensg_id for t in targets}) == 1000
    primary = [max(t.mixture, key=lambda m: m[1])[0] for t in targets]
    counts = {c: primary.count(c) for c in set(primary)}
    # HPA: nucleoplasm and cytosol are the most common main locations
    assert sorted(counts, key=counts.get)[-2:] in (["cytoplasmic", "nucleoplasm"], ["nucleoplasm", "cytoplasmic"])
    assert set(HPA_TO_OPENCELL.values()) <= set(opencell_annotations()["annotation_name"])


def test_store_is_deterministic_whatever_the_worker_count(tmp_path):
    kwargs = dict(name="sc", size=32, crops_per_target=2, n_targets=24, seed=3,
                  labels={"rule": "single_grade3", "min_targets": 15})
    one = SynthCellSource(**kwargs, workers=1).open(tmp_path / "a")
    two = SynthCellSource(**kwargs, workers=2).open(tmp_path / "b")
    assert one.fingerprint == two.fingerprint
    assert np.array_equal(one.read(0, len(one)), two.read(0, len(two)))
    other = SynthCellSource(**{**kwargs, "seed": 4}, workers=1).open(tmp_path / "c")
    assert other.fingerprint != one.fingerprint


def test_store_labels_follow_the_rule(tmp_path):
    store = SynthCellSource("sc", size=32, crops_per_target=2, n_targets=80, workers=1,
                            labels={"rule": "single_grade3", "min_targets": 15}).open(tmp_path)
    assert store.channel_names == ["nucleus", "protein"] and store.images.shape[1:] == (2, 32, 32)
    assert len(store.classes) == 12 and store.label_rule == "single_grade3"
    truth = target_labels(opencell_annotations(), "single_grade3").table.set_index("ensg_id")["label"]
    for row in store.samples.itertuples():
        assert row.label == truth.get(row.ensg_id, -1)
    assert {"sample_id", "target", "ensg_id", "fov_id", "crop_y", "crop_x", "label"} <= set(store.samples.columns)


def test_multilabel_store_has_label_sets(tmp_path):
    store = SynthCellSource("sc", size=32, crops_per_target=2, n_targets=40, workers=1,
                            labels={"rule": "multilabel", "min_targets": 15}).open(tmp_path)
    assert store.label_sets is not None and store.label_sets.shape == (len(store), len(store.classes))
    labelled = store.labels >= 0
    assert (store.label_sets[labelled].sum(axis=1) >= 1).all()
    assert store.label_sets[np.arange(len(store))[labelled], store.labels[labelled]].all()


def test_hpa_domain_is_unlabelled_with_four_channels(tmp_path):
    store = SynthCellSource("h", domain="hpa", size=32, crops_per_target=2, n_targets=10, workers=1,
                            labels={"rule": "none"}).open(tmp_path)
    assert store.channel_names == ["nucleus", "protein", "microtubules", "er"]
    assert (store.labels == -1).all() and store.classes == []
    with pytest.raises(ValueError, match="unlabelled"):
        SynthCellSource("h", domain="hpa", n_targets=10, labels={"rule": "single_grade3"})
