"""The wheel carries the configs: `python -m xferlab.train` works from any directory after install."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    wheel = next(out.glob("xferlab-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for config in ("xferlab/conf/train.yaml", "xferlab/conf/backbone/random.yaml", "xferlab/conf/hydra/default.yaml",
                   "xferlab/conf/hydra/launcher/slurm.yaml",
                   "xferlab/conf/experiment/demo.yaml", "xferlab/data/resources/public-annotations-flat-2021-09-29.csv",
                   "xferlab/data/resources/hpa_subcellular_location_trimmed.tsv",
                   "xferlab/backbones/shipped/manifest.json", "xferlab/backbones/shipped/synth_hpa_s0.pth",
                   "xferlab/backbones/shipped/synth_opencell_s2.pth", "xferlab/backbones/shipped/synth_shift100_s0.pth"):
        assert config in names, config
    site = out / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    return site


def run_from_wheel(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_installed_wheel_runs_from_another_directory(wheel_site, tmp_path):
    where = run_from_wheel(wheel_site, tmp_path, "-c", "import xferlab; print(xferlab.__file__)")
    assert where.stdout.strip().startswith(str(wheel_site)), where.stdout + where.stderr
    help_ = run_from_wheel(wheel_site, tmp_path, "-m", "xferlab.train", "--help")
    assert help_.returncode == 0 and "hpa, hpa_sc, imagenet" in help_.stdout and "backbone: " in help_.stdout
    job = run_from_wheel(wheel_site, tmp_path, "-m", "xferlab.train", "experiment=smoke", "logger=csv")
    assert job.returncode == 0, job.stderr[-3000:]
    assert "test/macro_f1=" in job.stdout
    assert list((tmp_path / "outputs" / "runs" / "smoke").glob("*/metrics.json"))
