"""Images listed in a CSV (`path, label, group[, split]`) -> store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from hydra.utils import instantiate
from PIL import Image

from tests.conftest import compose_config
from xferlab.data.importers.folder import FolderSource
from xferlab.data.store import StoreError


def two_channel(size: int, channel_last: bool = False, dtype=np.uint16) -> np.ndarray:
    """Nucleus = 10, protein = 20 everywhere, as (2, H, W) or (H, W, 2)."""
    image = np.stack([np.full((size, size), 10), np.full((size, size), 20)]).astype(dtype)
    return np.moveaxis(image, 0, -1) if channel_last else image


def write_dataset(root: Path, rows: list[tuple[str, np.ndarray, str, str, str]], split: bool = True) -> Path:
    """Write each (relative path, image, label, group, split) and the CSV listing them."""
    for rel, image, *_ in rows:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".png":
            Image.fromarray(image).save(path)
        else:
            tifffile.imwrite(path, image)
    table = pd.DataFrame([r[2:] for r in rows], columns=["label", "group", "split"])
    table.insert(0, "path", [r[0] for r in rows])
    if not split:
        table = table.drop(columns="split")
    table.to_csv(root / "images.csv", index=False)
    return root / "images.csv"


def tiff_rows() -> list:
    return [
        ("img/a1.tif", two_channel(40), "vesicles", "LAMP2", "train"),
        ("img/a2.tif", two_channel(80, channel_last=True), "vesicles", "LAMP2", "val"),
        ("img/b1.tiff", two_channel(64), "er", "CYP51A1", "test"),
        ("img/c1.tif", two_channel(48, channel_last=True), "", "CDC27", ""),
    ]


def source(csv, **kwargs) -> FolderSource:
    return FolderSource(name="folder", csv=str(csv) if csv else csv, **kwargs)


def assert_nothing_left(data_dir: Path) -> None:
    left = [p.name for p in data_dir.iterdir() if not p.name.endswith(".lock")] if data_dir.exists() else []
    assert left == []


def test_tiffs_in_both_layouts_are_resized_and_labelled(tmp_path):
    csv = write_dataset(tmp_path / "ds", tiff_rows())
    store = source(csv).open(tmp_path / "data")
    assert len(store) == 4 and store.images.dtype == np.float32
    images = store.read(0, 4)
    assert images.shape == (4, 2, 64, 64)
    np.testing.assert_allclose(images[:, 0], 10, rtol=1e-6)
    np.testing.assert_allclose(images[:, 1], 20, rtol=1e-6)
    assert store.classes == ["er", "vesicles"]
    samples = store.samples
    assert samples["sample_id"].tolist() == ["img/a1.tif", "img/a2.tif", "img/b1.tiff", "img/c1.tif"]
    assert samples["target"].tolist() == ["LAMP2", "LAMP2", "CYP51A1", "CDC27"]
    assert samples["label"].tolist() == [1, 1, 0, -1]
    assert samples["split"].tolist() == [0, 1, 2, -1]
    assert store.attrs["source"]["importer"] == "folder"


def test_pngs_grayscale_and_two_channel(tmp_path):
    gray = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)
    csv = write_dataset(tmp_path / "gray", [("g1.png", gray, "x", "g1", "train"), ("g2.png", gray, "y", "g2", "")],
                        split=False)
    store = source(csv, channels=["protein"], size=16).open(tmp_path / "data")
    assert store.read(0, 2).shape == (2, 1, 16, 16) and store.channel_names == ["protein"]
    assert "split" not in store.samples.columns
    la = two_channel(24, channel_last=True, dtype=np.uint8)  # a grayscale+alpha PNG: (H, W, 2)
    csv = write_dataset(tmp_path / "la", [("p.png", la, "x", "g", "train")])
    store = source(csv, size=24).open(tmp_path / "data")
    np.testing.assert_array_equal(store.read(0, 1)[0, :, 0, 0], [10, 20])


@pytest.mark.parametrize("image,channels,message", [
    (np.full((32, 32), 5, dtype=np.uint16), ["nucleus", "protein"], "1 channel .* dataset.channels has 2"),
    (np.zeros((3, 32, 32), dtype=np.uint16), ["nucleus", "protein"], "3 channels .* dataset.channels has 2"),
    (two_channel(32), ["protein"], "2 channels .* dataset.channels has 1"),
    (np.zeros((2, 2, 8, 8), dtype=np.uint16), ["nucleus", "protein"], "4-D image"),
])
def test_channel_mismatch_is_refused(tmp_path, image, channels, message):
    good = two_channel(32) if len(channels) == 2 else np.ones((32, 32), dtype=np.uint16)
    csv = write_dataset(tmp_path / "ds", [("good.tif", good, "er", "Y", "train"), ("bad.tif", image, "er", "X", "")])
    with pytest.raises(StoreError, match=message) as err:
        source(csv, channels=channels).open(tmp_path / "data")
    assert str(tmp_path / "ds" / "bad.tif") in str(err.value)
    assert_nothing_left(tmp_path / "data")


def test_unreadable_and_missing_files_are_refused(tmp_path):
    csv = write_dataset(tmp_path / "ds", tiff_rows())
    garbage = tmp_path / "ds" / "img" / "b1.tiff"
    garbage.write_bytes(b"this is not a tiff" * 8)
    with pytest.raises(StoreError, match="cannot be read as a TIFF") as err:
        source(csv).open(tmp_path / "data")
    assert str(garbage) in str(err.value)
    garbage.unlink()
    with pytest.raises(FileNotFoundError, match="b1.tiff: listed in .*images.csv"):
        source(csv).open(tmp_path / "data")
    assert_nothing_left(tmp_path / "data")


def test_mixed_dtypes_are_refused(tmp_path):
    rows = tiff_rows()[:1] + [("f.tif", two_channel(32).astype(np.float32), "er", "X", "train")]
    csv = write_dataset(tmp_path / "ds", rows)
    with pytest.raises(StoreError, match="f.tif: dtype float32, but a1.tif is uint16"):
        source(csv).open(tmp_path / "data")
    assert_nothing_left(tmp_path / "data")


@pytest.mark.parametrize("table,message", [
    ("path,label,group\n", "no rows"),
    ("path,label\nimg/a1.tif,er\n", r"lacks column\(s\) \['group'\]"),
    ("path,label,group,split\nimg/a1.tif,er,G,training\n", r"split values \['training'\]"),
    ("path,label,group\nimg/a1.tif,er,\n", "empty group in data row 1"),
    ("path,label,group\nimg/a1.tif,er,G\nimg/a1.tif,er,G\n", "listed twice"),
])
def test_bad_tables_are_refused(tmp_path, table, message):
    csv = write_dataset(tmp_path / "ds", tiff_rows())
    csv.write_text(table)
    with pytest.raises(StoreError, match=message) as err:
        source(csv).open(tmp_path / "data")
    assert str(csv) in str(err.value)
    assert_nothing_left(tmp_path / "data")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_pixels_are_refused_naming_the_file(tmp_path, bad):
    image = two_channel(32).astype(np.float32)
    image[1, 5, 7] = bad
    rows = [("ok.tif", two_channel(32).astype(np.float32), "er", "X", "train"), ("bad.tif", image, "er", "Y", "")]
    csv = write_dataset(tmp_path / "ds", rows)
    with pytest.raises(StoreError, match=r"1 NaN or infinite pixel value\(s\) \(first at index \(1, 5, 7\)") as err:
        source(csv).open(tmp_path / "data")
    assert str(tmp_path / "ds" / "bad.tif") in str(err.value) and "Fix or remove this image" in str(err.value)
    assert_nothing_left(tmp_path / "data")


def test_configured_classes_refuse_an_unknown_label_and_fix_the_order(tmp_path):
    csv = write_dataset(tmp_path / "ds", tiff_rows())
    with pytest.raises(StoreError, match="unknown label 'er' in data row 3") as err:
        source(csv, classes=["vesicles", "golgi"]).open(tmp_path / "data")
    assert str(csv) in str(err.value) and "add the class to dataset.classes" in str(err.value)
    assert_nothing_left(tmp_path / "data")
    store = source(csv, classes=["vesicles", "er", "golgi"]).open(tmp_path / "data")
    assert store.classes == ["vesicles", "er", "golgi"] and store.samples["label"].tolist() == [0, 0, 1, -1]
    with pytest.raises(ValueError, match="dataset.classes"):
        source(csv, classes=["a", "a"])


def test_missing_csv_and_bad_channels_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset.csv"):
        source(None).open(tmp_path / "data")
    with pytest.raises(FileNotFoundError, match="dataset.csv"):
        source(tmp_path / "nope.csv").open(tmp_path / "data")
    with pytest.raises(ValueError, match="unique"):
        source(None, channels=["a", "a"])


def test_hydra_config_builds_and_reuses_the_store(tmp_path, monkeypatch):
    csv = write_dataset(tmp_path / "ds", tiff_rows())
    cfg = compose_config(["dataset=folder", f"dataset.csv={csv}", "dataset.size=32", "paths.output_dir=/tmp/x"])
    first = instantiate(cfg.dataset).open(tmp_path / "data")
    assert first.read(0, 1).shape == (1, 2, 32, 32) and first.channel_names == ["nucleus", "protein"]
    monkeypatch.setattr(FolderSource, "build", lambda *a: pytest.fail("store rebuilt"))
    second = instantiate(cfg.dataset).open(tmp_path / "data")
    assert second.path == first.path and second.fingerprint == first.fingerprint
    with pytest.raises(FileNotFoundError, match="set dataset.csv="):
        instantiate(compose_config(["dataset=folder", "paths.output_dir=/tmp/x"]).dataset).open(tmp_path)
