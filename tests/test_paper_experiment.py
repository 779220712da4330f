"""`experiment=paper` end to end on real OpenCell fields, as a researcher runs it: the study's four
backbones from weights files in their publishers' formats (DINO's bare ViT-S/16 and ViT-B/8
state dicts, DINO4Cells' full DINO checkpoint with four channels, xferlab's own OpenCell DINO with
the targets it saw), two modes, two seeds, then the report. The weights are small (one block of
width 32, at the real patch sizes and 224 px position grids) so that the 16 jobs run in about a
minute; what is checked is the plumbing: 8 conditions, pairs only within a mode or a backbone,
the mode in every job's name and record."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

from tests.backbones.test_checkpoints import dino_checkpoint
from tests.backbones.vit_reference import random_vit_state
from tests.conftest import xferlab_env
from tests.real_data import hoechst_fields, with_protein

BACKBONES = ("imagenet", "imagenet_vitb8", "hpa", "opencell")
MODES = ("crops", "fov")
TARGETS_PER_CLASS = 5
FOVS_PER_TARGET = 2


def study_targets(n_classes: int = 3) -> pd.DataFrame:
    """`TARGETS_PER_CLASS` real OpenCell targets (single grade-3 annotation) from each of the
    first `n_classes` classes of the packaged table: ensg_id, target_name, label."""
    from xferlab.data.labels import opencell_annotations, target_labels

    annotations = opencell_annotations()
    names = annotations.drop_duplicates("ensg_id").set_index("ensg_id")["target_name"]
    labelled = target_labels(annotations, "single_grade3", min_targets=15).table
    labelled = labelled[labelled["label"] < n_classes].sort_values(["label", "ensg_id"])
    picked = labelled.groupby("label").head(TARGETS_PER_CLASS).copy()
    picked["target_name"] = [names[e].replace("_", "-") for e in picked["ensg_id"]]
    return picked[["ensg_id", "target_name", "label"]].reset_index(drop=True)


def write_fields(root: Path, targets: pd.DataFrame) -> None:
    """Each target's FOVs in the release layout: the real Hoechst fields under the eight
    rotations and flips (each a distinct field), each with a real field as its protein channel."""
    fields = hoechst_fields()
    names = sorted(fields)
    k = 0
    for row in targets.itertuples():
        folder = root / f"{row.target_name}_{row.ensg_id}"
        folder.mkdir(parents=True)
        for fid in range(FOVS_PER_TARGET):
            image = with_protein(fields, names[k % len(names)])
            turn = (k // len(names)) % 8
            image = np.rot90(image, turn % 4, axes=(1, 2))
            image = np.ascontiguousarray(image[:, :, ::-1] if turn >= 4 else image)
            tifffile.imwrite(folder / f"OC-FOV_{row.target_name}_{row.ensg_id}_CID00001_FID{fid:05d}_proj.tif", image)
            k += 1


def write_weights(folder: Path, seen: list[str]) -> None:
    """The four files the paper's backbone configs name, each in its publisher's layout."""
    folder.mkdir()
    vit = lambda chans, patch, seed: random_vit_state(in_chans=chans, patch=patch, img=224, dim=32, depth=1,  # noqa: E731
                                                      seed=seed)
    torch.save(vit(3, 16, 0), folder / "dino_deitsmall16_pretrain.pth")  # DINO's backbone-only release
    torch.save(vit(3, 8, 1), folder / "dino_vitbase8_pretrain.pth")
    torch.save(dino_checkpoint(vit(4, 8, 2)), folder / "DINO_FOV_checkpoint.pth")  # DINO4Cells: a full DINO checkpoint
    record = {"dataset": "opencell_raw", "split_seed": 0, "seen": {"targets": seen}, "input_pixel_size_um": 0.206,
              "input_size": 224}
    torch.save(dino_checkpoint(vit(2, 16, 3), extra={"xferlab": record}), folder / "opencell_dino.pth")


def test_the_paper_study_on_real_fields_reports_every_backbone_in_both_modes(tmp_path):
    from xferlab.data.splits import TRAIN, grouped_split

    targets = study_targets()
    write_fields(tmp_path / "opencell", targets)
    # the OpenCell DINO saw split 0's training targets, as experiment=opencell_dino pretrains it
    split = grouped_split(targets["target_name"].to_numpy(), targets["label"].to_numpy(), seed=0)
    write_weights(tmp_path / "weights", sorted(targets["target_name"][split == TRAIN]))
    out = tmp_path / "outputs"
    env = xferlab_env(XFERLAB_WEIGHTS=str(tmp_path / "weights"))
    train = [sys.executable, "-m", "xferlab.train", "-m", "experiment=paper", f"dataset.root={tmp_path / 'opencell'}",
             "seed=0,1", "dataset.max_crops_per_fov=2", "logger=csv", f"paths.output_root={out}"]
    proc = subprocess.run(train, cwd=tmp_path, env=env, text=True, capture_output=True, timeout=850)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]

    runs = sorted(out.glob("sweeps/paper/*/*/metrics.json"))
    assert len(runs) == len(BACKBONES) * len(MODES) * 2
    named = set()
    for path in runs:
        metrics = json.loads(path.read_text())
        mode = metrics["settings"]["dataset.mode"]
        backbone = metrics["backbone"]
        assert mode in MODES and backbone in BACKBONES
        assert f"dataset.mode={mode}" in path.parent.name
        named.add((backbone, mode))
    assert named == {(b, m) for b in BACKBONES for m in MODES}

    sweep_dir = runs[0].parent.parent
    report = subprocess.run([sys.executable, "-m", "xferlab.report", str(sweep_dir), "--bootstrap", "200",
                             "--map", "none"], cwd=tmp_path, env=env, text=True, capture_output=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    summary = pd.read_csv(next((sweep_dir / "report").glob("*/summary.csv")))
    expected = {f"{b}, mode={m}" for b in BACKBONES for m in MODES}
    assert set(summary["condition"]) == expected and len(summary) == 8
    assert (summary["n_units"] == 2).all()  # seeds 0 and 1
    compared = pd.read_csv(next((sweep_dir / "report").glob("*/comparisons.csv")))
    for a, b in zip(compared["a"], compared["b"]):
        (ba, ma), (bb, mb) = (name.split(", mode=") for name in (a, b))
        assert ma == mb or ba == bb, (a, b)  # within a mode, or one backbone across modes; never crossed
    pairs = {frozenset(p) for p in zip(compared["a"], compared["b"])}
    assert len(pairs) == 2 * 6 + 4  # every pair of backbones in each mode, each backbone across modes
    listed = pd.read_csv(next((sweep_dir / "report").glob("*/samples_per_target.csv")))
    assert set(listed["data_fingerprint"]) == {json.loads(p.read_text())["data_fingerprint"] for p in runs}
    assert len(set(listed["data_fingerprint"])) == 2  # one store per mode, each listed
    for fingerprint, counts in listed.groupby("data_fingerprint"):
        run = next(p for p in runs if json.loads(p.read_text())["data_fingerprint"] == fingerprint)
        recorded = json.loads(run.read_text())["samples_per_target"]
        assert recorded["targets"] == len(counts) and recorded["max"] == counts["samples"].max()
        assert (counts["samples"] <= (2 if "crops" in run.parent.name else 1) * 4).all()  # <= 2 crops per FOV
    assert "samples per target in the jobs' splits" in report.stdout  # the report's text, as printed
