"""python -m xferlab.export: a cache entry or a run folder to .h5ad, read back with anndata."""

import json
import shutil

import anndata
import numpy as np
import pandas as pd
import pytest

from tests.conftest import write_store
from tests.embeddings.test_extractor import make_trainer, tiny_backbone
from xferlab.backbones.channels import NaturalMapping
from xferlab.backbones.preprocess import Preprocessor
from xferlab.embeddings.export import ExportError, load
from xferlab.embeddings.extractor import ensure_embeddings
from xferlab.export import main


@pytest.fixture(scope="module")
def entry(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    store = write_store(root / "s.zarr", n_per_class=3, size=16, chunk_rows=4)
    backbone = tiny_backbone()
    adapter = NaturalMapping("natural", store.channel_names, backbone.in_channels)
    cache, _ = ensure_embeddings(store, backbone, adapter, Preprocessor(16, "zscore"), root / "cache", make_trainer)
    return store, cache


def fake_run(run_dir, store, cache):
    """The files of a finished run that the export reads (as `write_results` writes them)."""
    run_dir.mkdir()
    (run_dir / "run_info.json").write_text(json.dumps({"cache_path": str(cache.path), "cache_hit": False}))
    (run_dir / "metrics.json").write_text(json.dumps({"backbone": "t", "seed": 3, "test/macro_f1": 0.5}))
    targets = sorted(set(store.samples["target"]))
    (run_dir / "split_targets.json").write_text(json.dumps({"train": targets[:3], "val": targets[3:4],
                                                            "test": targets[4:]}))
    test = store.samples[store.samples["target"].isin(targets[4:])]
    pd.DataFrame({"sample_id": test["sample_id"], "target": test["target"], "label": test["label"],
                  "pred_name": "b"}).to_csv(run_dir / "predictions.csv", index=False)
    return targets


def test_a_cache_entry_exports_to_h5ad_with_embeddings_samples_and_provenance(entry, tmp_path):
    store, cache = entry
    out = tmp_path / "e.h5ad"
    assert main([str(cache.path), "--out", str(out)]) == 0
    adata = anndata.read_h5ad(out)
    np.testing.assert_array_equal(adata.X, cache.load())
    assert list(adata.obs_names) == list(store.samples["sample_id"])
    assert list(adata.obs["target"]) == list(store.samples["target"])
    assert list(adata.obs["label_name"]) == [store.classes[i] for i in store.labels]
    meta = adata.uns["xferlab"]
    assert meta["cache_key"] == cache.key
    assert json.loads(meta["cache_spec"])["images_fingerprint"] == store.images_fingerprint
    assert json.loads(meta["classes"]) == store.classes
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind


def test_a_run_folder_adds_its_split_predictions_and_provenance(entry, tmp_path):
    store, cache = entry
    targets = fake_run(tmp_path / "run", store, cache)
    assert main([str(tmp_path / "run")]) == 0
    adata = anndata.read_h5ad(tmp_path / "run" / "embeddings.h5ad")
    split = adata.obs["split"].astype(str)
    assert set(split[adata.obs["target"].isin(targets[:3])]) == {"train"}
    assert set(split[adata.obs["target"].isin(targets[4:])]) == {"test"}
    assert set(adata.obs.loc[split == "test", "pred_name"].astype(str)) == {"b"}
    assert set(adata.obs.loc[split == "train", "pred_name"].astype(str)) == {""}
    assert json.loads(adata.uns["xferlab"]["run"]) == {"backbone": "t", "seed": 3}


def test_a_moved_store_is_named_and_found_again_with_store(entry, tmp_path, capsys):
    store, cache = entry
    moved = tmp_path / "moved.zarr"
    shutil.copytree(store.path, moved)
    copy = tmp_path / "cache" / cache.path.name
    shutil.copytree(cache.path, copy)
    attrs = json.loads((copy / "zarr.json").read_text())
    attrs["attributes"]["computed_from"]["store"] = str(tmp_path / "gone.zarr")
    (copy / "zarr.json").write_text(json.dumps(attrs))
    assert main([str(copy), "--out", str(tmp_path / "x.h5ad")]) == 2
    err = capsys.readouterr().err
    assert "gone.zarr" in err and "--store" in err
    assert not (tmp_path / "x.h5ad").exists()
    assert len(load(copy, store_path=moved).X) == len(store)


def test_a_folder_that_is_neither_is_refused_with_what_to_pass(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "neither a cache entry nor a run folder" in capsys.readouterr().err
    with pytest.raises(ExportError, match="does not exist"):
        load(tmp_path / "nope")
