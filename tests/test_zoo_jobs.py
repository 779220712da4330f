"""The new kinds of backbone run whole jobs (extraction, cache, head, metrics) on a tiny dataset,
from small files in their published layouts: SubCell, OpenPhenom, DINOv3."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.backbones.test_channel_agnostic import DIM
from tests.backbones.test_channel_agnostic import released_file as openphenom_file
from tests.backbones import meta_reference as meta
from tests.backbones.test_dinov2_dinov3 import hub_file
from tests.backbones.test_subcell import released_state
from tests.conftest import compose_config
from xferlab.job import run_job
from xferlab.runtime.building import build


def subcell(folder):
    path = folder / "DNA-Protein_MAE-CellS-ProtS-Pool.pth"
    torch.save(released_state(2), path)
    return path, ["backbone.preprocess.scale=resize", "backbone.preprocess.input_size=32"]


def openphenom(folder):
    path = folder / "OpenPhenom.safetensors"
    openphenom_file(path)
    return path, ["backbone.preprocess.input_size=32"]


def dinov3(folder):
    cfg = compose_config(["backbone=dinov3_vits16"]).backbone
    return hub_file(folder, cfg, meta.dinov3_state(16), 64), ["backbone.preprocess.input_size=32"]


@pytest.mark.parametrize("backbone,make", [("subcell_bg", subcell), ("openphenom", openphenom),
                                           ("dinov3_vits16", dinov3)])
def test_a_job_runs_end_to_end(job_config, tmp_path, monkeypatch, backbone, make):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path / "weights"))
    (tmp_path / "weights").mkdir()
    path, overrides = make(tmp_path / "weights")
    cfg = job_config(f"backbone={backbone}", *overrides)
    result = run_job(cfg)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["backbone"] == backbone and metrics["n_test"] > 0 and 0.0 <= metrics["test/macro_f1"] <= 1.0
    assert metrics["weights_sha256"] == build(cfg.backbone).weights_sha256  # the file's weights, not others
    info = json.loads((result.run_dir / "run_info.json").read_text())
    assert info["backbone_sha256_after"] == metrics["weights_sha256"]  # frozen


def test_the_channel_agnostic_backbone_takes_every_channel_of_the_dataset(job_config, tmp_path, monkeypatch):
    """OpenPhenom (`take_dataset_channels: true`) on a store with nucleus, protein and ER: all three
    are its inputs, in the store's order, none dropped or zero-filled; its mean / std follow."""
    from tests.conftest import write_store

    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path / "weights"))
    (tmp_path / "weights").mkdir()
    _, overrides = openphenom(tmp_path / "weights")
    store = write_store(tmp_path / "three.zarr", n_per_class=6, classes=("a", "b", "c"), size=32,
                        channels=("nucleus", "protein", "er"))
    result = run_job(job_config("backbone=openphenom", "dataset=store", f"dataset.path={store.path}", *overrides))
    info = json.loads((result.run_dir / "run_info.json").read_text())
    spec = json.loads((Path(info["cache_path"]) / "zarr.json").read_text())["attributes"]["spec"]
    assert spec["backbone"]["in_channels"] == ["nucleus", "protein", "er"]
    assert spec["channels"]["sources"] == [0, 1, 2]
    assert spec["preprocess"]["mean"] == [0.0, 0.0, 0.0] and spec["preprocess"]["std"] == [1.0, 1.0, 1.0]
    assert result.backbone.embed_dim == DIM  # the test model's width: one mean over every channel's patches


def test_channels_the_backbone_would_drop_are_named_when_it_keeps_its_own_inputs(job_config, tmp_path):
    from xferlab.backbones.channel_agnostic import with_dataset_channels

    cfg = job_config("backbone=openphenom").backbone
    fitted = with_dataset_channels(cfg, ["nucleus", "protein", "er", "mito"])
    assert list(fitted.in_channels) == ["nucleus", "protein", "er", "mito"] and list(fitted.preprocess.std) == [1.0] * 4
    assert with_dataset_channels(cfg, ["nucleus", "protein"]) is cfg  # the shipped inputs: the config as it is
    kept = job_config("backbone=openphenom", "backbone.take_dataset_channels=false").backbone
    assert with_dataset_channels(kept, ["nucleus", "protein", "er"]) is kept
    uneven = job_config("backbone=openphenom", "backbone.preprocess.mean=[0.1,0.2]").backbone
    with pytest.raises(ValueError, match=r"backbone.preprocess.mean=\[0.1, 0.2\] differs per channel"):
        with_dataset_channels(uneven, ["nucleus", "protein", "er"])
