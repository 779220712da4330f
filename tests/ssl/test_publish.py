"""One way to get the OpenCell backbone: `experiment=opencell_dino` publishes its finished
checkpoint as the file `backbone=opencell` loads, the errors give the same command, and a file
the pretraining did not write is never replaced (`xferlab.ssl.publish`)."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import compose_config, xferlab_env
from tests.ssl.test_pretrain import few_cfg
from xferlab.backbones.locations import OPENCELL_DINO_COMMAND, read_lock, where_to_get
from xferlab.runtime.building import build
from xferlab.ssl.run import run_pretraining


def test_the_opencell_pretraining_writes_the_file_the_opencell_backbone_reads():
    overrides = [o.replace("<images>", "/data/opencell") for o in shlex.split(OPENCELL_DINO_COMMAND)[3:]]
    pretrain = compose_config(overrides, config_name="pretrain")
    evaluate = compose_config(["experiment=paper", "backbone=opencell", "paths.output_dir=/tmp/x"])
    assert pretrain.publish == evaluate.backbone.weights == "opencell_dino.pth"
    assert pretrain.backbone.arch == evaluate.backbone.arch and pretrain.ssl.global_size == \
        evaluate.backbone.preprocess.input_size == 224
    advice = where_to_get("opencell_dino.pth")  # what the missing-file error says
    assert f"`{OPENCELL_DINO_COMMAND}`" in advice and "writes opencell_dino.pth into the weights folder" in advice
    assert compose_config(["paths.output_dir=/tmp/x"], config_name="pretrain").publish is None  # others: opt in


def test_a_finished_pretraining_is_published_atomically_and_loads_as_the_opencell_backbone(tmp_path, shared_root,
                                                                                          monkeypatch):
    from xferlab.backbones.checkpoints import read_file

    weights = tmp_path / "weights"
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(weights))
    cfg = few_cfg(tmp_path, shared_root / "data", "ssl.epochs=1", "name=oc", "publish=opencell_dino.pth")
    result = run_pretraining(cfg)
    published = weights / "opencell_dino.pth"
    assert result["published"] == str(published)
    assert published.read_bytes() == (tmp_path / "pretrain" / "oc" / "checkpoint.pth").read_bytes()
    assert [p.name for p in weights.iterdir() if p.name.startswith(".opencell")] == []  # no temporary file left
    from xferlab.runtime.integrity import file_sha256

    assert read_lock(weights)["opencell_dino.pth"] == file_sha256(published)
    backbone = build(compose_config(["backbone=opencell", "backbone.preprocess.input_size=16",
                                     "paths.output_dir=/tmp/x"]).backbone)  # the bare name, found in the folder
    teacher = read_file(published)["teacher"]
    for name, value in backbone.model.state_dict().items():
        assert torch.equal(value, teacher[f"backbone.{name}"]), name
    assert backbone.pretraining["seen"]["targets"]  # the record travels with it
    # the same pretraining again (resumed, nothing left to train) may replace its own file
    assert run_pretraining(cfg)["published"] == str(published)
    # another pretraining may not: refused before it trains, naming the file
    other = few_cfg(tmp_path, shared_root / "data", "ssl.epochs=1", "name=other", "seed=1",
                    "publish=opencell_dino.pth")
    with pytest.raises(FileExistsError, match=f"{published} already exists and is another pretraining's"):
        run_pretraining(other)
    assert not (tmp_path / "pretrain" / "other" / "checkpoint.pth").exists()


def test_the_preflight_refuses_a_pretraining_that_would_replace_a_file_it_did_not_write(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "opencell_dino.pth").write_bytes(b"my own checkpoint")
    out = tmp_path / "outputs"
    proc = subprocess.run([sys.executable, "-m", "xferlab.pretrain", "dataset=toycell_tiny", "publish=opencell_dino.pth",
                           f"paths.output_root={out}"], cwd=tmp_path, env=xferlab_env(XFERLAB_WEIGHTS=str(weights)),
                          text=True, capture_output=True, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in text, text[-3000:]
    assert f"publish=opencell_dino.pth: {weights / 'opencell_dino.pth'} already exists and is not written by this " \
           "pretraining" in text
    assert not out.exists() and (weights / "opencell_dino.pth").read_bytes() == b"my own checkpoint"


def test_the_preflight_computes_the_config_digest_the_pretraining_records():
    """So a rerun of the same pretraining may replace the file it published (the check compares digests)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tests.conftest import CONF_DIR
    from xferlab.checks.inputs import job_digest
    from xferlab.runtime.provenance import config_digest

    overrides = ["experiment=opencell_dino", "dataset.root=/data/opencell"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        seen_by_preflight = compose("pretrain", overrides=overrides, return_hydra_config=True)
    job = compose_config([*overrides, "paths.output_dir=/tmp/x"], config_name="pretrain")
    assert job_digest(seen_by_preflight) == config_digest(job)


def test_a_pretraining_sweep_that_publishes_is_checked_before_any_job(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from tests.conftest import CONF_DIR
    from xferlab.checks.preflight import Preflight

    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    (tmp_path / "mine.pth").write_bytes(b"my own checkpoint")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("pretrain", overrides=["dataset=toycell_tiny", "publish=mine.pth"], return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.overrides.task = ["dataset=toycell_tiny", "publish=mine.pth", "seed=0,1"]
        with pytest.raises(SystemExit) as stop:
            Preflight._stop_on_error(cfg, multirun=True)
    text = str(stop.value.code)
    assert "(2 jobs, none launched); 1 problem" in text and text.count("mine.pth already exists") == 1


@pytest.mark.parametrize("name", ["dir/opencell_dino.pth", "opencell_dino", ""])
def test_a_publish_name_must_be_a_checkpoint_file_name(name):
    from xferlab.ssl.publish import published_path

    with pytest.raises(ValueError, match="expected a file name ending in .pth"):
        published_path(name)


@pytest.mark.slow  # a ViT-S/16 at 224 px on the CPU: about a minute on 2 cores
def test_the_documented_cpu_try_out_runs_on_real_fields_and_its_backbone_evaluates(tmp_path, monkeypatch):
    """The README's try-out command, on the real fields (three targets, four FOVs each): it trains
    on the CPU, publishes `opencell_dino_tryout.pth`, and `backbone=opencell` loads it by name."""
    import tifffile

    from tests.real_data import hoechst_fields, with_protein
    from tests.checks.test_inputs import TARGETS

    fields = hoechst_fields()
    root = tmp_path / "opencell"
    for gene, ensg in TARGETS.items():
        for i, name in enumerate(sorted(fields)):
            path = root / f"{gene}_{ensg}" / f"OC-FOV_{gene}_{ensg}_CID00001_FID0000{i}_proj.tif"
            path.parent.mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(path, with_protein(fields, name))
    weights = tmp_path / "weights"
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(weights))
    command = ["experiment=opencell_dino", f"dataset.root={root}", "trainer=cpu", "name=opencell_dino_tryout",
               "max_images=64", "ssl.epochs=1", "ssl.batch_size=16", "ssl.num_workers=0", "ssl.n_local=2"]
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "xferlab.pretrain", *command, "logger=csv",
                           f"paths.output_root={tmp_path / 'outputs'}"], cwd=tmp_path,
                          env=xferlab_env(XFERLAB_WEIGHTS=str(weights)), text=True, capture_output=True, timeout=1200)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    print(f"CPU try-out: {time.perf_counter() - started:.0f} s")
    assert f"published as {weights / 'opencell_dino_tryout.pth'}" in proc.stdout
    backbone = build(compose_config(["backbone=opencell", "backbone.weights=opencell_dino_tryout.pth",
                                     "paths.output_dir=/tmp/x"]).backbone)
    assert backbone.pretraining["input_size"] == 224 and backbone.pretraining["input_pixel_size_um"] == \
        pytest.approx(0.206 * 200 / 224)
