"""`make demo` reproduces the README: the demo sweep, run from scratch in a fresh folder, prints the
table and verdicts committed in docs/results/ (which the README quotes), digit for digit."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import xferlab_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # renders the store, extracts twelve backbones and runs 60 jobs: `make demo`'s minutes
def test_the_demo_sweep_prints_the_committed_table(tmp_path):
    sweep = tmp_path / "outputs" / "sweeps" / "demo" / "test"
    env = xferlab_env()
    env.pop("XFERLAB_ROOT", None)
    train = subprocess.run([sys.executable, "-m", "xferlab.train", "-m", "experiment=demo", f"hydra.sweep.dir={sweep}"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600)
    assert train.returncode == 0, train.stderr[-3000:]
    report = subprocess.run([sys.executable, "-m", "xferlab.report", str(sweep), "--map", "none"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    folder = sweep / "report" / "demo"
    assert (folder / "summary.md").read_text() == (ROOT / "docs" / "results" / "demo.md").read_text()
    assert (folder / "verdicts.md").read_text() == (ROOT / "docs" / "results" / "demo_verdicts.md").read_text()
    assert (folder / "summary.md").read_text() in report.stdout  # what `make demo` prints
