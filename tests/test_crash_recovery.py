"""`python -m xferlab.train` killed with SIGKILL at a well-defined moment (a stall point, see
`xferlab.runtime.faults`), then run again: nothing partial is used as complete, the work is redone or
resumed, and the results equal an uninterrupted run's byte for byte."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import SMOKE, compose_config, kill_when_stalled, xferlab_env
from xferlab.job import run_job


def test_extraction_killed_midway_leaves_no_entry_and_the_rerun_redoes_it(tmp_path, job_config):
    root, run = tmp_path / "outputs", tmp_path / "killed"
    output = kill_when_stalled("xferlab.train", [*SMOKE, f"paths.output_root={root}", f"hydra.run.dir={run}"],
                               cwd=tmp_path, stall_at="cache.chunk_written")
    assert "Traceback" not in output
    cache = root / "cache"
    leftovers = list(cache.glob(".*.zarr.tmp-*"))
    assert len(leftovers) == 1 and leftovers[0].is_dir()  # the dead builder's half-written entry
    assert not list(cache.glob("*.zarr"))  # nothing published
    assert not (run / "metrics.json").exists()

    rerun = run_job(compose_config(SMOKE + [f"paths.output_root={root}", f"paths.output_dir={run}"]))
    assert rerun.info["cache_hit"] is False  # extracted again, not taken from the partial entry
    assert not leftovers[0].exists() and len(list(cache.glob("*.zarr"))) == 1
    reference = run_job(job_config())  # uninterrupted, on its own outputs root
    assert (run / "metrics.json").read_bytes() == (reference.run_dir / "metrics.json").read_bytes()


def test_sweep_killed_during_head_training_resumes_without_redoing_finished_jobs(tmp_path, job_config):
    root, sweep = tmp_path / "outputs", tmp_path / "sweep"
    args = ["-m", *SMOKE, "seed=0,1", f"paths.output_root={root}", f"hydra.sweep.dir={sweep}"]
    kill_when_stalled("xferlab.train", args, cwd=tmp_path, stall_at="head.path_step@2", where="seed=1")
    (first,) = sweep.glob("*seed=0")
    (second,) = sweep.glob("*seed=1")
    assert (first / "metrics.json").exists() and not (second / "metrics.json").exists()
    done = (first / "metrics.json").stat().st_mtime_ns, (first / "run_info.json").read_bytes()

    proc = subprocess.run([sys.executable, "-m", "xferlab.train", *args], cwd=tmp_path, env=xferlab_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipping" in (first / "train.log").read_text()  # the finished job was not run again
    assert ((first / "metrics.json").stat().st_mtime_ns, (first / "run_info.json").read_bytes()) == done
    assert json.loads((second / "run_info.json").read_text())["cache_hit"] is True
    reference = run_job(job_config("seed=1"))  # uninterrupted, on its own outputs root
    assert (second / "metrics.json").read_bytes() == (reference.run_dir / "metrics.json").read_bytes()
