"""cytoself preprocessed crops (`<protein>_pro.npy`, `_nuc.npy`, `_label.csv`) -> store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra.utils import instantiate

from tests.conftest import compose_config
from xferlab.data.importers.cytoself import CytoselfSource
from xferlab.data.store import StoreError

# protein: (ensg, loc_grade2, loc_grade3, number of crops, dtype)
PROTEINS = {
    "LAMP2": ("ENSG00000005893", "golgi", "vesicles", 3, np.float32),
    "CYP51A1": ("ENSG00000001630", "", "er", 2, np.uint16),
    "CDC27": ("ENSG00000004897", "", "cytoplasmic;nucleoplasm", 2, np.uint8),
}


def write_protein(root: Path, name: str, ensg: str, grade2: str, grade3: str, n: int, dtype,
                  size: int = 100) -> None:
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / f"{name}_nuc.npy", np.full((n, size, size), 10, dtype=dtype))
    np.save(root / f"{name}_pro.npy", (np.arange(n)[:, None, None] + np.zeros((n, size, size))).astype(dtype))
    np.save(root / f"{name}_nucdist.npy", np.zeros((n, size, size), dtype=np.float32))
    pd.DataFrame({"ensg": ensg, "name": name, "loc_grade1": "", "loc_grade2": grade2, "loc_grade3": grade3,
                  "protein_id": 7, "FOV_id": [f"FOV{i}" for i in range(n)]}).to_csv(root / f"{name}_label.csv",
                                                                                 index=False)


def write_folder(root: Path) -> Path:
    for name, args in PROTEINS.items():
        write_protein(root, name, *args)
    return root


def source(root, **kwargs) -> CytoselfSource:
    return CytoselfSource(name="cytoself", root=str(root) if root else root, **kwargs)


def assert_nothing_left(data_dir: Path) -> None:
    left = [p.name for p in data_dir.iterdir() if not p.name.endswith(".lock")] if data_dir.exists() else []
    assert left == []


def labels_of(store, protein: str) -> set:
    return set(store.samples.loc[store.samples["target"] == protein, "label"])


def test_crops_are_stacked_nucleus_protein_with_annotation_labels(tmp_path):
    store = source(write_folder(tmp_path / "cs")).open(tmp_path / "data")
    assert len(store) == 7 and store.images.dtype == np.float32
    assert store.channel_names == ["nucleus", "protein"] and store.image_size == (100, 100)
    images = store.read(0, 7)
    assert (images[:, 0] == 10).all()
    samples = store.samples
    assert samples["sample_id"].tolist()[:2] == ["CDC27/0", "CDC27/1"]  # proteins in name order
    np.testing.assert_array_equal(images[:2, 1, 0, 0], [0, 1])
    assert samples["fov_id"].tolist()[:2] == ["FOV0", "FOV1"]
    assert set(samples["crop_y"]) == {-1} and set(samples["crop_x"]) == {-1}
    assert labels_of(store, "LAMP2") == {store.classes.index("vesicles")}
    assert labels_of(store, "CYP51A1") == {store.classes.index("er")}
    assert labels_of(store, "CDC27") == {-1}
    assert store.label_rule == "single_grade3" and store.attrs["source"]["labels"]["from"] == "annotations"


def test_size_resizes(tmp_path):
    store = source(write_folder(tmp_path / "cs"), size=32).open(tmp_path / "data")
    assert store.read(0, 7).shape == (7, 2, 32, 32)
    np.testing.assert_allclose(store.read(0, 7)[:, 0], 10)


def test_labels_from_the_tables_own_grades(tmp_path):
    root = write_folder(tmp_path / "cs")
    single = source(root, labels={"from": "table", "rule": "single_grade3", "min_targets": 0}).open(tmp_path / "a")
    assert single.classes == ["er", "vesicles"]
    assert labels_of(single, "LAMP2") == {1} and labels_of(single, "CDC27") == {-1}
    multi = source(root, labels={"from": "table", "rule": "multilabel", "min_targets": 0}).open(tmp_path / "b")
    assert multi.classes == ["cytoplasmic", "er", "golgi", "nucleoplasm", "vesicles"]
    assert labels_of(multi, "LAMP2") == {4}  # grade 3 before grade 2
    row = int(np.nonzero(multi.samples["target"].to_numpy() == "LAMP2")[0][0])
    assert multi.label_sets[row].tolist() == [0, 0, 1, 0, 1]
    assert labels_of(multi, "CDC27") == {0}
    few = source(root, labels={"from": "table", "rule": "single_grade3", "min_targets": 1}).open(tmp_path / "c")
    assert few.classes == [] and set(few.labels) == {-1}


def test_missing_nucleus_file_is_refused(tmp_path):
    root = write_folder(tmp_path / "cs")
    (root / "LAMP2_nuc.npy").unlink()
    with pytest.raises(StoreError, match="LAMP2_nuc.npy is missing") as err:
        source(root).open(tmp_path / "data")
    assert str(root / "LAMP2_pro.npy") in str(err.value)
    assert_nothing_left(tmp_path / "data")


@pytest.mark.parametrize("damage,file,message", [
    (lambda root: np.save(root / "CDC27_nuc.npy", np.zeros((3, 100, 100))), "CDC27_nuc.npy", "differs from"),
    (lambda root: np.save(root / "CDC27_pro.npy", np.zeros((100, 100))), "CDC27_pro.npy", r"expected \(N, H, W\)"),
    (lambda root: (root / "CDC27_nuc.npy").write_bytes(b"garbage" * 20), "CDC27_nuc.npy", "cannot be read"),
    (lambda root: pd.read_csv(root / "CDC27_label.csv").head(1).to_csv(root / "CDC27_label.csv", index=False),
     "CDC27_label.csv", "1 rows for 2 crops"),
    (lambda root: (root / "CDC27_label.csv").unlink(), "CDC27_pro.npy", "CDC27_label.csv is missing"),
    (lambda root: np.save(root / "EXTRA_nuc.npy", np.zeros((1, 100, 100))), "EXTRA_nuc.npy", "no matching"),
    (lambda root: np.save(root / "CDC27_pro.npy", np.zeros((2, 100, 100), dtype=np.complex64)), "CDC27_pro.npy",
     "dtype complex64"),
])
def test_inconsistent_files_are_refused(tmp_path, damage, file, message):
    root = write_folder(tmp_path / "cs")
    damage(root)
    with pytest.raises(StoreError, match=message) as err:
        source(root).open(tmp_path / "data")
    assert str(root / file) in str(err.value)
    assert_nothing_left(tmp_path / "data")


def test_nan_pixels_are_refused_naming_the_file_and_crop(tmp_path):
    root = write_folder(tmp_path / "cs")
    crops = np.load(root / "LAMP2_pro.npy")
    crops[2, 10, 10] = np.nan
    np.save(root / "LAMP2_pro.npy", crops)
    with pytest.raises(StoreError, match=r"crop 2 \(sample LAMP2/2\): 1 NaN or infinite pixel") as err:
        source(root).open(tmp_path / "data")
    assert str(root / "LAMP2_pro.npy") in str(err.value)
    assert_nothing_left(tmp_path / "data")


def test_an_unknown_category_in_the_label_table_is_refused(tmp_path):
    root = write_folder(tmp_path / "cs")
    write_protein(root, "TPR", "ENSG00000047410", "", "nuclear_membrain", 1, np.float32)  # a typo
    options = {"from": "table", "rule": "single_grade3", "min_targets": 0}
    with pytest.raises(StoreError, match=r"loc_grade3 names unknown categor\(ies\) \['nuclear_membrain'\]") as err:
        source(root, labels=options).open(tmp_path / "data")
    assert str(root / "TPR_label.csv") in str(err.value) and "Correct the table" in str(err.value)
    assert_nothing_left(tmp_path / "data")


def test_different_crop_sizes_need_a_size(tmp_path):
    root = write_folder(tmp_path / "cs")
    write_protein(root, "TPR", "ENSG00000047410", "", "nuclear_membrane", 1, np.float32, size=80)
    with pytest.raises(StoreError, match="set dataset.size"):
        source(root).open(tmp_path / "data")
    assert_nothing_left(tmp_path / "data")
    assert source(root, size=64).open(tmp_path / "data").image_size == (64, 64)


def test_unknown_target_empty_folder_and_missing_root(tmp_path):
    root = write_folder(tmp_path / "cs")
    write_protein(root, "NOTAGENE", "ENSG00000999999", "", "er", 1, np.float32)
    with pytest.raises(StoreError, match="ENSG00000999999 is not in the OpenCell annotation table") as err:
        source(root).open(tmp_path / "data")
    assert str(root / "NOTAGENE_label.csv") in str(err.value)
    assert_nothing_left(tmp_path / "data")
    assert labels_of(source(root, allow_unknown_targets=True).open(tmp_path / "data"), "NOTAGENE") == {-1}
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="no \\*_pro.npy files"):
        source(tmp_path / "empty").open(tmp_path / "data2")
    with pytest.raises(FileNotFoundError, match="dataset.root"):
        source(None).open(tmp_path / "data2")
    assert_nothing_left(tmp_path / "data2")


def test_bad_label_options_are_refused():
    with pytest.raises(ValueError, match="labels.from"):
        source(None, labels={"from": "hpa"})
    with pytest.raises(ValueError, match="unknown key"):
        source(None, labels={"rules": "multilabel"})


def test_hydra_config_builds_and_reuses_the_store(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "cs")
    cfg = compose_config(["dataset=cytoself", f"dataset.root={root}", "dataset.labels.from=table",
                          "dataset.labels.min_targets=0", "paths.output_dir=/tmp/x"])
    first = instantiate(cfg.dataset).open(tmp_path / "data")
    assert first.classes == ["er", "vesicles"]
    monkeypatch.setattr(CytoselfSource, "build", lambda *a: pytest.fail("store rebuilt"))
    second = instantiate(cfg.dataset).open(tmp_path / "data")
    assert second.path == first.path and second.fingerprint == first.fingerprint
    with pytest.raises(FileNotFoundError, match="set dataset.root="):
        instantiate(compose_config(["dataset=cytoself", "paths.output_dir=/tmp/x"]).dataset).open(tmp_path)
