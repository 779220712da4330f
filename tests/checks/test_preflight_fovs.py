"""`dataset=fovs` in the check before any job: backbones whose channels the files cannot fill are
skipped with the reason (experiment=zoo), the pixel size comes from the files' metadata, bad files
stop the sweep naming the file; and one command turns a folder of OME-TIFF fields and a CSV into a
ranking of the backbones present. Generated nuclei-like fields: no ../shared needed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import xferlab_env
from tests.data.importers.ome_files import nuclei_field, write_ome_tiff
from tests.checks.test_preflight import sweep
from xferlab.checks.preflight import skip_missing_backbones, sweep_problems

CHANNELS = ("nucleus", "protein")


def fields_folder(folder: Path, pixel: float | None = 0.25, per_class: int = 12, size: int = 160) -> Path:
    """One OME-TIFF field per group, `per_class` groups in each of two classes told apart by where
    their protein is (around the nucleus or in it); the CSV beside them."""
    rows = ["path,group,label"]
    for i in range(2 * per_class):
        label = "ab"[i % 2]
        image = nuclei_field(i, size=size, n=3, radius=10, protein=400, pattern="ring" if label == "a" else "nuclear")
        write_ome_tiff(folder / "fields" / f"well{i:02d}.ome.tif", image, pixel, CHANNELS)
        rows.append(f"fields/well{i:02d}.ome.tif,protein{i:02d},{label}")
    csv = folder / "fovs.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def test_zoo_on_own_fields_skips_backbones_whose_channels_are_missing_and_takes_the_pixel_size_from_the_files(
        tmp_path, monkeypatch):
    from tests.backbones.test_subcell import released_state

    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path / "weights"))
    (tmp_path / "weights").mkdir()
    torch.save(released_state(2), tmp_path / "weights" / "DNA-Protein_MAE-CellS-ProtS-Pool.pth")
    torch.save(released_state(4), tmp_path / "weights" / "all_channels_MAE-CellS-ProtS-Pool.pth")
    csv = fields_folder(tmp_path / "a", per_class=1)
    task = ["experiment=zoo", "dataset=fovs", f"dataset.table={csv}"]

    def check(cfg):
        return skip_missing_backbones(cfg), str(cfg.hydra.sweeper.params.backbone)

    problems, kept = sweep(task, check)
    # SubCell bg (scale=match) runs: the 0.25 um pixels come from the files' metadata, no config
    assert kept == "subcell_bg,random,pixels"
    (rybg,) = [p for p in problems if p.startswith("backbone=subcell_rybg")]
    assert rybg.startswith("backbone=subcell_rybg needs the channel(s) ['microtubules', 'er']")
    assert "dataset.channels" in rybg  # the fix when the files hold them
    assert any(p.startswith("backbone=subcell_ybg needs the channel(s) ['er']") for p in problems)
    # files whose metadata has no pixel size: SubCell cannot match its pretraining's pixels and is listed
    no_pixel = fields_folder(tmp_path / "b", pixel=None, per_class=1)
    problems, kept = sweep([*task[:2], f"dataset.table={no_pixel}"], check)
    assert kept == "random,pixels"
    assert any(p.startswith("backbone=subcell_bg resamples") and "dataset.pixel_size_um" in p for p in problems)


def test_bad_fields_stop_the_sweep_before_any_job_naming_the_file(tmp_path):
    csv = fields_folder(tmp_path, per_class=2)
    (tmp_path / "fields" / "well02.ome.tif").unlink()
    write_ome_tiff(tmp_path / "fields" / "well03.ome.tif", nuclei_field(3), 0.5, CHANNELS)
    task = ["experiment=zoo", "dataset=fovs", f"dataset.table={csv}", "backbone=random,pixels"]
    problems, n_jobs = sweep(task, lambda cfg: sweep_problems(cfg, True))
    text = "\n".join(problems)
    assert n_jobs == 2 * 5
    assert str(tmp_path / "fields" / "well02.ome.tif") in text and "no such file" in text
    assert str(tmp_path / "fields" / "well03.ome.tif") in text and "pixel size (um) 0.5" in text
    mapped = [*task, "dataset.channels={nucleus: DAPI, protein: protein}"]
    problems, _ = sweep(mapped, lambda cfg: sweep_problems(cfg, True))
    assert any("no channel named 'DAPI'" in p and str(tmp_path / "fields" / "well00.ome.tif") in p for p in problems)


def test_one_command_from_a_folder_of_ome_tiff_fields_to_a_ranking(tmp_path):
    """`python -m xferlab.train -m experiment=zoo dataset=fovs dataset.table=<csv>`: the backbones
    with weights run (here the random control and raw pixels), those without are listed, and the
    report ranks the ones that ran with paired intervals per crop and per protein."""
    csv = fields_folder(tmp_path / "lab")
    weights, out = tmp_path / "weights", tmp_path / "outputs"
    weights.mkdir()
    env = xferlab_env(XFERLAB_WEIGHTS=str(weights))
    args = ["-m", "experiment=zoo", "dataset=fovs", f"dataset.table={csv}", "dataset.crop_size=64", "dataset.size=32",
            "logger=csv", f"paths.output_root={out}", "hydra.sweeper.params.seed=0",
            "hydra.sweeper.params.backbone='random,pixels,hpa,subcell_rybg'"]
    proc = subprocess.run([sys.executable, "-m", "xferlab.train", *args], cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=600)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert "2 backbones of this experiment not run" in text and "DINO_FOV_checkpoint.pth" in text
    (sweep_dir,) = (out / "sweeps" / "zoo").iterdir()
    metrics = [json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")]
    assert sorted(m["backbone"] for m in metrics) == ["pixels", "random"]
    (store,) = (out / "data").glob("fovs-*.zarr")
    attrs = json.loads((store / "zarr.json").read_text())["attributes"]
    assert attrs["field_pixel_size_um"] == 0.25 and attrs["pixel_size_um"] == 0.5  # from the files: 64 px -> 32 px
    report = subprocess.run([sys.executable, "-m", "xferlab.report", str(sweep_dir), "--bootstrap", "200", "--map", "none"],
                            cwd=tmp_path, env=env, text=True, capture_output=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    print(report.stdout)
    assert "DINO_FOV_checkpoint.pth" in report.stdout.split("\n\n")[0]  # the backbones not run, first
    ranking = [line.split("|")[1].strip() for line in report.stdout.splitlines() if line.startswith("| ")][1:]
    assert sorted(ranking) == ["pixels", "random"]
    assert "per crop" in report.stdout and "per protein" in report.stdout  # paired comparisons with the control


def test_too_few_groups_for_a_split_stop_the_sweep_before_the_import(tmp_path):
    csv = fields_folder(tmp_path, per_class=2)  # two groups per class: a class needs three to reach val and test
    problems, _ = sweep(["experiment=zoo", "dataset=fovs", f"dataset.table={csv}", "backbone=random,pixels"],
                        lambda cfg: sweep_problems(cfg, True))
    assert any("dataset=fovs (not imported yet" in p and "would be empty" in p and "dataset.table" in p for p in problems)
