"""The new kinds of backbone run whole jobs (extraction, cache, head, metrics) on a tiny dataset,
from small files in their published layouts: SubCell, OpenPhenom, DINOv3."""

from __future__ import annotations

import json

import pytest
import torch

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
