"""The check before any job starts: the sweep expanded, overrides honoured, what is missing listed
once, nothing launched and no run folder left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from tests.backbones.test_checkpoints import dino_checkpoint
from tests.backbones.vit_reference import random_vit_state
from tests.conftest import CONF_DIR
from xferlab.checks.preflight import input_overrides, job_configs, job_overrides, missing_inputs

SRC = Path(__file__).resolve().parents[2] / "src"


def sweep(task: list[str], fn):
    """Call `fn(config)` on the multirun config Hydra would hand the callback for `task`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        plain = [o for o in task if "," not in o.split("=", 1)[1]]
        cfg = compose("train", overrides=plain, return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.overrides.task = task
        return fn(cfg)


def test_the_design_card_sweep_offline_stops_at_once_with_one_list(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "XFERLAB_WEIGHTS": str(tmp_path / "weights"),
           "PYTHONPATH": os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])}
    out = tmp_path / "outputs"
    proc = subprocess.run([sys.executable, "-m", "xferlab.train", "backbone=hpa", "seed=0,1,2,3,4",
                           f"paths.output_root={out}", "-m"], cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=120)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert "Traceback" not in text and "5 jobs, none launched" in text
    assert text.count("DINO_FOV_checkpoint.pth is not in the weights folder") == 1  # once, not once per job
    assert str(tmp_path / "weights" / "DINO_FOV_checkpoint.pth") in text and "zenodo" in text  # where to put / get
    assert not out.exists()  # no sweep folder, no run folder


def test_the_sweep_is_expanded_with_the_experiment_params_and_the_command_line():
    overrides = sweep(["experiment=paper", "seed=0,1"], job_overrides)
    backbones = ("hpa", "imagenet", "imagenet_vitb8", "opencell")
    assert len(overrides) == 16  # 4 backbones x 2 dataset modes from the experiment x 2 seeds from the command line
    assert ["backbone=hpa", "dataset.mode=fov", "experiment=paper", "seed=1"] in [sorted(o) for o in overrides]
    distinct = input_overrides(overrides, {"backbone", "dataset", "experiment"})
    assert sorted(map(sorted, distinct)) == [["backbone=" + b, f"dataset.mode={m}", "experiment=paper"]
                                             for b in backbones for m in ("crops", "fov")]
    kept = input_overrides([["seed=0", "backbone.weights=a"], ["seed=1", "backbone.weights=b"]], set())
    assert kept == [["backbone.weights=a"], ["backbone.weights=b"]]  # a value under backbone counts, a seed not


def test_split_keys_count_only_where_a_split_is_checked():
    jobs = [["seed=0", "split_seed=0", "head.lr=1"], ["seed=1", "split_seed=1", "head.lr=1"]]
    assert input_overrides(jobs, set()) == [[]]  # one config for the weights and data of both jobs
    assert input_overrides(jobs, set(), splits=True) == [["split_seed=0"], ["split_seed=1"]]
    by_seed = [["seed=0"], ["seed=1"]]  # an experiment whose split_seed follows the seed
    assert input_overrides(by_seed, set(), splits=True) == [[]]
    assert input_overrides(by_seed, set(), splits=True, seed_splits=True) == by_seed


def test_missing_inputs_of_the_paper_study_are_listed_once_each(tmp_path, monkeypatch):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path / "weights"))
    problems = sweep(["experiment=paper"], lambda cfg: missing_inputs(job_configs(cfg, multirun=True)[0]))
    text = "\n".join(problems)
    assert len(problems) == 5  # 40 jobs: four weights files and the dataset root, each once
    for name in ("dino_deitsmall16_pretrain.pth is not", "dino_vitbase8_pretrain.pth is not",
                 "DINO_FOV_checkpoint.pth is not", "opencell_dino.pth not found",
                 "dataset=opencell_raw: dataset.root=None does not exist"):
        assert text.count(name) == 1, name


def test_an_override_pointing_at_an_existing_file_passes(tmp_path, monkeypatch):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path / "weights"))
    mine = tmp_path / "my_hpa.pth"
    torch.save(dino_checkpoint(random_vit_state(in_chans=4, dim=32, depth=1)), mine)
    task = ["backbone=hpa", "seed=0,1,2,3,4", f"backbone.weights={mine}"]
    assert sweep(task, lambda cfg: missing_inputs(job_configs(cfg, multirun=True)[0])) == []
    images = tmp_path / "opencell"
    images.mkdir()
    task = ["experiment=paper", f"dataset.root={images}", f"backbone.weights={mine}"]
    problems = sweep(task, lambda cfg: missing_inputs(job_configs(cfg, multirun=True)[0]))
    assert len(problems) == 1 and problems[0].startswith(f"{images}: no OpenCell FOVs")  # the import would refuse it
    fov = images / "LAMP2_ENSG00000005893" / "OC-FOV_LAMP2_ENSG00000005893_CID0001_FID0001_proj.tif"
    fov.parent.mkdir()
    tifffile.imwrite(fov, np.zeros((2, 64, 64), dtype=np.uint16))
    problems = sweep(task, lambda cfg: missing_inputs(job_configs(cfg, multirun=True)[0]))
    assert len(problems) == 1 and "the val and test splits would be empty" in problems[0]  # one target
    for gene, ensg in {"VMP1": "ENSG00000062716", "AGPAT2": "ENSG00000169692", "ALG2": "ENSG00000119523"}.items():
        fov = images / f"{gene}_{ensg}" / f"OC-FOV_{gene}_{ensg}_CID0001_FID0001_proj.tif"  # er: one per split
        fov.parent.mkdir()
        tifffile.imwrite(fov, np.zeros((2, 64, 64), dtype=np.uint16))
    assert sweep(task, lambda cfg: missing_inputs(job_configs(cfg, multirun=True)[0])) == []


def test_online_the_sweep_downloads_a_missing_public_checkpoint_once_before_the_jobs(tmp_path, monkeypatch):
    from tests.backbones.record_server import RecordServer, zip_bytes
    from tests.backbones.test_download import saved
    from xferlab.backbones.locations import read_lock
    from xferlab.checks.preflight import Preflight

    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    fov = saved(dino_checkpoint(random_vit_state(in_chans=4, dim=32, depth=1)))
    with RecordServer() as server:
        monkeypatch.setenv("XFERLAB_ZENODO_URL", server.url)
        server.add_record("8061392", {"HPA_FOV_data.zip": zip_bytes({"HPA_FOV_data/DINO_FOV_checkpoint.pth": fov})})
        sweep(["backbone=hpa", "seed=0,1,2,3,4"], lambda cfg: Preflight()._check(cfg, multirun=True))
        assert (tmp_path / "weights" / "DINO_FOV_checkpoint.pth").read_bytes() == fov
        assert server.requests.count(("GET", "/api/records/8061392", None)) == 1  # once for the five jobs
        assert "DINO_FOV_checkpoint.pth" in read_lock(tmp_path / "weights")


@pytest.mark.slow  # two real jobs (about 30 s on 2 cores)
def test_online_the_design_card_sweep_downloads_once_and_every_job_runs(tmp_path):
    from tests.backbones.record_server import RecordServer, zip_bytes
    from tests.backbones.test_download import saved

    fov = saved(dino_checkpoint(random_vit_state(in_chans=4, dim=32, depth=1)))
    out = tmp_path / "outputs"
    with RecordServer() as server:
        server.add_record("8061392", {"HPA_FOV_data.zip": zip_bytes({"HPA_FOV_data/DINO_FOV_checkpoint.pth": fov})})
        env = {**os.environ, "HF_HUB_OFFLINE": "0", "WANDB_MODE": "offline", "XFERLAB_ZENODO_URL": server.url,
               "XFERLAB_WEIGHTS": str(tmp_path / "weights"),
               "PYTHONPATH": os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])}
        proc = subprocess.run([sys.executable, "-m", "xferlab.train", "backbone=hpa", "seed=0,1",
                               "dataset=toycell_tiny", "logger=csv", "backbone.preprocess.input_size=32",
                               f"paths.output_root={out}", "-m"], cwd=tmp_path, env=env, text=True,
                              capture_output=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert server.requests.count(("GET", "/api/records/8061392", None)) == 1
    assert len(list(out.glob("sweeps/default/*/*/metrics.json"))) == 2


def test_a_backbone_that_matches_pixel_sizes_needs_a_dataset_that_declares_one(tmp_path, monkeypatch):
    from tests.backbones.test_subcell import released_state

    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    torch.save(released_state(2), tmp_path / "DNA-Protein_MAE-CellS-ProtS-Pool.pth")
    problems = sweep(["backbone=subcell_bg", "seed=0,1"], lambda cfg: missing_inputs(job_configs(cfg, True)[0]))
    assert problems == [p for p in problems if "declares no pixel size" in p] and len(problems) == 1
    assert sweep(["backbone=subcell_bg", "backbone.preprocess.scale=resize", "seed=0,1"],
                 lambda cfg: missing_inputs(job_configs(cfg, True)[0])) == []


def test_a_hub_backbone_offline_and_not_cached_is_listed(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    task = ["backbone=imagenet", "backbone.init=hub", "backbone.hub_id=vit_small_patch16_224.not_cached_here", "seed=0,1"]
    problems = sweep(task, lambda cfg: missing_inputs(job_configs(cfg, multirun=True)[0]))
    assert len(problems) == 1 and "timm/vit_small_patch16_224.not_cached_here is not in the local Hugging Face cache" \
        in problems[0]


# ---------------------------------------------------------------- experiment=zoo: missing_backbones=skip

def test_zoo_sweep_keeps_the_backbones_present_and_lists_the_others(tmp_path, monkeypatch):
    from tests.backbones.test_subcell import released_state
    from xferlab.checks.preflight import skip_missing_backbones

    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    torch.save(released_state(2), tmp_path / "DNA-Protein_MAE-CellS-ProtS-Pool.pth")  # only SubCell bg is here

    def check(cfg):
        listed = str(cfg.hydra.sweeper.params.backbone).split(",")
        problems = skip_missing_backbones(cfg)
        return listed, problems, str(cfg.hydra.sweeper.params.backbone), job_overrides(cfg)

    listed, problems, kept, jobs = sweep(["experiment=zoo", "dataset=opencell_raw"], check)
    assert kept == "subcell_bg,random,pixels"
    assert len(problems) == len(listed) - 3 and len(listed) >= 18
    assert any("DINO_FOV_checkpoint.pth" in p and "zenodo" in p for p in problems)  # where to get it
    assert any("vit_small_patch14_dinov2.lvd142m.safetensors" in p and "huggingface.co" in p for p in problems)
    assert any("opencell_dino.pth" in p and "xferlab.pretrain" in p for p in problems)
    assert len(jobs) == 3 * 5 and {o for j in jobs for o in j if o.startswith("backbone=")} == {
        "backbone=subcell_bg", "backbone=random", "backbone=pixels"}
    # SynthCell has no pixel size: SubCell (scale=match) cannot run there, and is listed with the fix
    _, problems, kept, _ = sweep(["experiment=zoo"], check)
    assert kept == "random,pixels"
    assert any(p.startswith("backbone=subcell_bg resamples") and "backbone.preprocess.scale=resize" in p
               for p in problems)
    # a backbone chosen on the command line is never skipped: the usual check stops the sweep
    _, problems, kept, _ = sweep(["experiment=zoo", "backbone=hpa,random"], check)
    assert problems == [] and "hpa" in kept


def test_zoo_runs_offline_on_synthcell_with_what_is_present_and_the_report_lists_the_rest(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "XFERLAB_WEIGHTS": str(weights),
           "PYTHONPATH": os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])}
    out = tmp_path / "outputs"
    args = ["-m", "experiment=zoo", "dataset=synthcell_tiny", "logger=csv", f"paths.output_root={out}",
            "hydra.sweeper.params.backbone='random_tiny,pixels,hpa,dinov3_vits16'", "hydra.sweeper.params.seed=0"]
    proc = subprocess.run([sys.executable, "-m", "xferlab.train", *args], cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=600)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert "2 backbones of this experiment not run" in text and "Traceback" not in text
    assert "DINO_FOV_checkpoint.pth" in text  # where to get it
    (sweep_dir,) = (out / "sweeps" / "zoo").iterdir()
    jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert len(jobs) == 2 and all("metrics.json" in {f.name for f in (sweep_dir / j).iterdir()} for j in jobs)
    assert {json.loads((sweep_dir / j / "metrics.json").read_text())["backbone"] for j in jobs} == {"random_tiny",
                                                                                                   "pixels"}
    report = subprocess.run([sys.executable, "-m", "xferlab.report", str(sweep_dir), "--bootstrap", "0"],
                            cwd=tmp_path, env=env, text=True, capture_output=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    first = report.stdout.split("\n\n")[0]
    assert "DINO_FOV_checkpoint.pth" in first and "vit_small_patch16_dinov3.lvd1689m.safetensors" in first
    assert "random_tiny" in report.stdout and "pixels" in report.stdout
