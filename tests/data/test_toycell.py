import numpy as np

from xferlab.data import toycell
from xferlab.data.sources import ToyCellSource


def test_generation_is_deterministic_under_its_seed():
    a, ta = toycell.generate(2, 2, 32, seed=0)
    b, tb = toycell.generate(2, 2, 32, seed=0)
    c, _ = toycell.generate(2, 2, 32, seed=1)
    assert np.array_equal(a, b) and ta.equals(tb)
    assert not np.array_equal(a, c)


def test_every_class_has_its_targets_and_crops():
    images, table = toycell.generate(3, 2, 32, seed=0)
    assert images.shape == (len(toycell.CLASSES) * 6, 2, 32, 32)
    assert images.dtype == np.uint16
    assert table.groupby("label")["target"].nunique().tolist() == [3] * len(toycell.CLASSES)
    assert table["sample_id"].is_unique
    # all crops of a target share its label
    assert (table.groupby("target")["label"].nunique() == 1).all()


def test_protein_patterns_differ_between_classes():
    images, table = toycell.generate(6, 2, 32, seed=0)
    protein = images[:, 1].astype(float)
    # nuclear classes put the protein where the nucleus is; cytoplasmic ones do not
    nucleus_mask = images[:, 0] > np.percentile(images[:, 0], 70, axis=(1, 2), keepdims=True)
    inside = np.array([p[m].mean() / p.mean() for p, m in zip(protein, nucleus_mask)])
    nucleoplasm = inside[table["label"] == toycell.CLASSES.index("nucleoplasm")].mean()
    cytoplasmic = inside[table["label"] == toycell.CLASSES.index("cytoplasmic")].mean()
    assert nucleoplasm > 1.5 * cytoplasmic


def test_source_builds_once_and_reopens(tmp_path):
    source = ToyCellSource("toycell", n_targets_per_class=2, crops_per_target=2, size=16, seed=0)
    store = source.open(tmp_path)
    mtime = store.path.stat().st_mtime_ns
    again = source.open(tmp_path)
    assert again.fingerprint == store.fingerprint
    assert again.path.stat().st_mtime_ns == mtime
    assert len(store) == len(toycell.CLASSES) * 4
