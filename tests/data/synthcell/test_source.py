import numpy as np
import pytest

from xferlab.data.labels import opencell_annotations, target_labels
from xferlab.data.synthcell.source import SynthCellSource


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


def test_hpa_genes_are_unlabelled_at_any_shift_with_the_channels_asked_for(tmp_path):
    store = SynthCellSource("h", genes="hpa", domain_shift=1.0, channels=["nucleus", "protein", "microtubules", "er"],
                            size=32, crops_per_target=2, fovs_per_target=1, n_targets=10, workers=1,
                            labels={"rule": "none"}).open(tmp_path / "a")
    assert store.channel_names == ["nucleus", "protein", "microtubules", "er"]
    assert (store.labels == -1).all() and store.classes == []
    assert store.attrs["source"]["domain_shift"] == 1.0 and store.attrs["source"]["generator_version"] == 2
    half = SynthCellSource("h", genes="hpa", domain_shift=0.5, size=32, crops_per_target=2, n_targets=10, workers=1,
                           labels={"rule": "none"}).open(tmp_path / "b")
    assert half.channel_names == ["nucleus", "protein"] and half.fingerprint != store.fingerprint
    with pytest.raises(ValueError, match="unlabelled"):
        SynthCellSource("h", genes="hpa", n_targets=10, labels={"rule": "single_grade3"})


def test_only_labelled_targets_are_rendered_unless_asked(tmp_path):
    kwargs = dict(size=32, crops_per_target=2, n_targets=None, workers=1, labels={"rule": "single_grade3"})
    labelled = SynthCellSource("sc", **kwargs).targets()
    everything = SynthCellSource("sc", labelled_only=False, **kwargs).targets()
    assert len(everything) == 1310 and 0 < len(labelled) < len(everything)
    table = target_labels(opencell_annotations(), "single_grade3")
    labels, _ = table.for_targets([t.ensg_id for t in labelled])
    assert (labels >= 0).all()


def test_crops_of_a_target_come_from_its_fields_of_view(tmp_path):
    store = SynthCellSource("sc", size=32, crops_per_target=4, fovs_per_target=2, n_targets=6, workers=1,
                            labels={"rule": "single_grade3"}).open(tmp_path)
    per_target = store.samples.groupby("target")["fov_id"].nunique()
    assert (per_target == 2).all()
    with pytest.raises(ValueError, match="fovs_per_target"):
        SynthCellSource("sc", crops_per_target=2, fovs_per_target=3)


@pytest.mark.parametrize("bad, match", [({"genes": "yeast"}, "dataset.genes"), ({"domain_shift": 2.0}, "domain_shift"),
                                        ({"channels": ["nucleus", "dapi"]}, "dataset.channels")])
def test_bad_settings_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        SynthCellSource("sc", **bad)
