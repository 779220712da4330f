"""What the check before the jobs finds without running one (`xferlab.checks.inputs`), on
real OpenCell fields laid out as the release lays them out: a FOV of the wrong dtype, shape or
channel count (from the TIFF headers), `scale=match` without a pretraining pixel size, whole fields
shown only in part, and test targets the backbone's pretraining saw. Each stops the sweep with one
line naming the file, key or value and the fix; nothing is launched and no folder is made."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from tests.backbones.test_checkpoints import dino_checkpoint
from tests.backbones.vit_reference import random_vit_state
from tests.conftest import xferlab_env
from tests.real_data import hoechst_fields, with_protein
from tests.checks.test_preflight import sweep
from xferlab.checks.preflight import Preflight

# three real OpenCell targets of one class (er, a single grade-3 annotation each): one lands in each split
TARGETS = {"VMP1": "ENSG00000062716", "AGPAT2": "ENSG00000169692", "ALG2": "ENSG00000119523"}


def opencell_root(root: Path) -> dict[str, Path]:
    """The real Hoechst fields, each paired with a protein channel, as one FOV per target in the
    release's layout; target name -> file."""
    fields = hoechst_fields()
    names = sorted(fields)
    files = {}
    for i, (gene, ensg) in enumerate(TARGETS.items()):
        path = root / f"{gene}_{ensg}" / f"OC-FOV_{gene}_{ensg}_CID00001_FID0000{i}_proj.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, with_protein(fields, names[i]))
        files[gene] = path
    return files


def opencell_checkpoint(path: Path, record: dict) -> Path:
    """A DINO checkpoint (a tiny ViT: the check reads the record, not the weights) carrying what
    xferlab's pretraining records."""
    torch.save(dino_checkpoint(random_vit_state(in_chans=2, dim=32, depth=1), extra={"xferlab": record}), path)
    return path


def problems_of(task: list[str]) -> list[str]:
    """The problem lines the preflight stops `task` (a multirun) with; [] when it lets it start."""
    try:
        sweep(task, lambda cfg: Preflight._stop_on_error(cfg, multirun=True))
    except SystemExit as stop:
        text = str(stop.code)
        assert text.startswith("xferlab: cannot start (") and "none launched" in text, text
        return [line[2:] for line in text.splitlines()[1:]]
    return []


@pytest.fixture
def study(tmp_path, monkeypatch):
    """A real-field OpenCell root and an empty weights folder; outputs under tmp_path."""
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path / "weights"))
    (tmp_path / "weights").mkdir()
    files = opencell_root(tmp_path / "opencell")
    base = ["dataset=opencell_raw", f"dataset.root={tmp_path / 'opencell'}", f"paths.output_root={tmp_path / 'out'}",
            "seed=0,1"]
    return tmp_path, files, base


def test_a_clean_real_field_study_passes(study):
    _, _, base = study
    assert problems_of([*base, "backbone=random", "dataset.mode=crops,fov"]) == []


@pytest.mark.parametrize("kind", ["float32", "one_channel", "channels_last", "unreadable"])
def test_a_bad_fov_stops_the_sweep_with_one_line_from_its_header(study, kind):
    tmp_path, files, base = study
    path = files["AGPAT2"]
    image = tifffile.imread(path)
    if kind == "float32":
        tifffile.imwrite(path, image.astype(np.float32))
        expected = f"{path}: dtype float32; OpenCell raw FOVs are uint16"
    elif kind == "one_channel":
        tifffile.imwrite(path, image[0])
        expected = f"{path}: one channel of shape (1024, 1024)"
    elif kind == "channels_last":
        tifffile.imwrite(path, np.moveaxis(image, 0, -1))
        expected = f"{path}: shape (1024, 1024, 2); expected (2, H, W)"
    else:
        path.write_bytes(b"II*\x00 not a tiff")
        expected = f"{path}: cannot be read as a TIFF"
    problems = problems_of([*base, "backbone=random", "dataset.mode=crops,fov"])
    assert len(problems) == 1 and problems[0].startswith(expected), problems
    assert not (tmp_path / "out").exists()


def test_the_header_check_agrees_with_the_pixels(study):
    """The shape and dtype read from the header are those of the pixels the import reads."""
    from xferlab.data.importers.common import read_tiff, tiff_header

    _, files, _ = study
    tifffile.imwrite(files["ALG2"], tifffile.imread(files["ALG2"]).astype(np.float32))
    for path in files.values():
        pixels = read_tiff(path)
        assert tiff_header(path) == (pixels.shape, pixels.dtype)


def test_match_without_a_pretraining_pixel_size_stops_the_sweep(study):
    """hpa's pixel size is unknown (neither its config nor its checkpoint gives one)."""
    tmp_path, _, base = study
    torch.save(dino_checkpoint(random_vit_state(in_chans=4, dim=32, depth=1)), tmp_path / "weights" / "DINO_FOV_checkpoint.pth")
    problems = problems_of([*base, "backbone=hpa", "backbone.preprocess.scale=match", "dataset.mode=crops,fov"])
    assert len(problems) == 1, problems
    assert problems[0].startswith("backbone=hpa resamples images to the pixel size of its pretraining")
    assert "backbone.preprocess.pretrained_pixel_size_um=" in problems[0] and "scale=resize" in problems[0]
    assert problems_of([*base, "backbone=hpa", "backbone.preprocess.scale=match",
                        "backbone.preprocess.pretrained_pixel_size_um=0.5"]) == []


def test_test_targets_the_backbone_saw_stop_the_sweep_named_as_plain_strings(study):
    tmp_path, _, base = study
    record = {"seen": {"targets": sorted(TARGETS), "ensg_ids": sorted(TARGETS.values())}, "dataset": "opencell_raw",
              "split_seed": 0, "unlabelled": True, "input_pixel_size_um": 0.184, "input_size": 224}
    opencell_checkpoint(tmp_path / "weights" / "opencell_dino.pth", record)
    problems = problems_of([*base, "backbone=opencell", "dataset.mode=crops,fov"])
    assert len(problems) == 1, problems  # once for both modes and both seeds
    (line,) = problems
    assert "np.str_" not in line and "[" not in line.split("this split of", 1)[1]
    named = [gene for gene in TARGETS if f": {gene} (pretraining" in line]
    assert len(named) == 1 and "1 of the 1 test targets" in line and "allow_seen_test_targets=true" in line
    assert "not imported yet" in line  # the split drawn from the files, before any store exists
    # the split the job will draw (the check draws it the same way): the named target is its test target
    from xferlab.data.splits import TEST, grouped_split

    split = grouped_split(np.array(list(TARGETS)), np.zeros(3, dtype=int), seed=0)
    assert named == [list(TARGETS)[int(np.nonzero(split == TEST)[0][0])]]
    assert problems_of([*base, "backbone=opencell", "allow_seen_test_targets=true"]) == []
    record["seen"] = {"targets": [], "ensg_ids": []}
    opencell_checkpoint(tmp_path / "weights" / "opencell_dino.pth", record)
    assert problems_of([*base, "backbone=opencell", "dataset.mode=crops,fov"]) == []


def test_every_swept_split_seed_is_checked(study):
    """A split seed swept on the command line is a split of its own: the one that tests a target
    the backbone saw stops the sweep, naming it."""
    from xferlab.data.splits import TEST, TRAIN, grouped_split

    tmp_path, _, base = study
    genes = np.array(list(TARGETS))
    split_of = {s: grouped_split(genes, np.zeros(3, dtype=int), seed=s) for s in range(30)}
    trained = str(genes[split_of[0] == TRAIN][0])
    seed = next(s for s in range(1, 30) if str(genes[split_of[s] == TEST][0]) == trained)
    record = {"seen": {"targets": [trained]}, "dataset": "opencell_raw", "split_seed": 0, "input_size": 224}
    opencell_checkpoint(tmp_path / "weights" / "opencell_dino.pth", record)
    assert problems_of([*base, "backbone=opencell", "split_seed=0"]) == []
    problems = problems_of([*base, "backbone=opencell", f"split_seed=0,{seed}"])
    assert len(problems) == 1 and f": {trained} (pretraining" in problems[0], problems


def test_whole_fields_matched_with_fit_centre_stop_the_sweep_saying_what_is_dropped(study):
    tmp_path, _, base = study
    record = {"seen": {"targets": []}, "input_pixel_size_um": 0.184, "input_size": 224}
    opencell_checkpoint(tmp_path / "weights" / "opencell_dino.pth", record)
    match = [*base, "backbone=opencell", "backbone.preprocess.scale=match"]
    problems = problems_of([*match, "dataset.mode=fov"])
    assert len(problems) == 1, problems
    line = problems[0]
    # 1024 px fields of 0.206 um (211 um) stored at 128 px, matched to 0.184 um: 1146 px, of which 224 are seen
    assert "only the central 224 x 224 px of each image resampled to 1146 px" in line
    assert "41.2 of its 211 um per side, 3.8 % of its area" in line
    assert "backbone.preprocess.fit=tiles" in line and "as 36 tiles" in line and "scale=resize" in line
    assert problems_of([*match, "dataset.mode=fov", "backbone.preprocess.fit=tiles"]) == []
    assert problems_of([*match, "dataset.mode=crops"]) == []  # 200 px crops at 0.206 um: 224 px at 0.184 um, all seen


def test_a_sweep_with_several_problems_stops_before_any_job_with_one_line_each(tmp_path):
    """The command line itself, the issue's sweep (`experiment=paper`, seeds 0 and 1, two crops per
    FOV) with `scale=match`: a float32 FOV, hpa without a pretraining pixel size, a test target the
    OpenCell backbone saw and whole fields it would see only in part give four lines, exit status 1,
    no traceback, no folder."""
    files = opencell_root(tmp_path / "opencell")
    tifffile.imwrite(files["ALG2"], tifffile.imread(files["ALG2"]).astype(np.float32))
    weights = tmp_path / "weights"
    weights.mkdir()
    torch.save(dino_checkpoint(random_vit_state(in_chans=4, dim=32, depth=1)), weights / "DINO_FOV_checkpoint.pth")
    opencell_checkpoint(weights / "opencell_dino.pth", {"seen": {"targets": sorted(TARGETS)}, "dataset": "opencell_raw",
                                                        "split_seed": 0, "input_pixel_size_um": 0.184, "input_size": 224})
    out = tmp_path / "outputs"
    args = ["-m", "xferlab.train", "-m", "experiment=paper", f"dataset.root={tmp_path / 'opencell'}", "seed=0,1",
            "dataset.max_crops_per_fov=2", "hydra.sweeper.params.backbone='hpa,opencell'",
            "backbone.preprocess.scale=match", f"paths.output_root={out}"]
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=tmp_path, env=xferlab_env(XFERLAB_WEIGHTS=str(weights)),
                          text=True, capture_output=True, timeout=300)
    seconds = time.perf_counter() - started
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text[-3000:]
    assert "Traceback" not in text and "np.str_" not in text
    assert "(8 jobs, none launched); 4 problems with the jobs' inputs:" in text, text[-3000:]
    lines = [line for line in text.splitlines() if line.startswith("- ")]
    assert len(lines) == 4, lines
    assert sum(f"{files['ALG2']}: dtype float32; OpenCell raw FOVs are uint16" in line for line in lines) == 1
    assert sum(line.startswith("- backbone=hpa resamples images to the pixel size") for line in lines) == 1
    assert sum("was pretrained on 1 of the 1 test targets" in line for line in lines) == 1
    assert sum("only the central 224 x 224 px" in line for line in lines) == 1
    assert not out.exists()  # no sweep folder, no run folder
    print(f"preflight of the 8-job sweep: {seconds:.1f} s")


def test_a_split_that_would_be_empty_stops_the_sweep_before_any_import(study):
    """Three real targets of three classes: the grouped split puts each class's only target in
    train, so val and test would be empty; the job found that only after importing and extracting.
    Now the check says so first, and nothing is imported."""
    tmp_path, files, base = study
    genes = {"CYP51A1": "ENSG00000001630", "SNX11": "ENSG00000002919", "RBM5": "ENSG00000003756"}  # er, vesicles, chromatin
    root = tmp_path / "three"
    for (gene, ensg), path in zip(genes.items(), files.values()):
        dest = root / f"{gene}_{ensg}" / f"OC-FOV_{gene}_{ensg}_CID00001_FID00001_proj.tif"
        dest.parent.mkdir(parents=True)
        dest.write_bytes(path.read_bytes())
    task = [*base[:1], f"dataset.root={root}", *base[2:], "backbone=random"]
    problems = problems_of(task)
    assert len(problems) == 1, problems
    assert "the val and test splits would be empty: 3 labelled target(s) in 3 class(es), 3 of them with fewer than 3" \
        in problems[0] and "change split.val / split.test" in problems[0], problems
    assert not (tmp_path / "out").exists()
