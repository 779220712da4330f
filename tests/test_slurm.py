"""Sweeps on a real one-node SLURM cluster (`tests.slurm_cluster`: Debian's slurm-wlm and munge,
started and stopped by the tests): the jobs of `hydra/launcher=slurm_cpu` run as a job array and
give the metrics of the same sweep run locally, sharing one embedding extraction per backbone; a
cancelled sweep finishes on a rerun with what was missing; a partition that does not exist, or no
cluster at all, stops the sweep before anything is submitted. Slow (minutes): `make test-cluster`,
and in `make test-all`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import xferlab
from tests.slurm_cluster import PARTITION, slurm_cluster  # noqa: F401 - the fixture

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

SWEEP = ["dataset=synthcell_tiny", "backbone=random,pixels", "seed=0,1", "logger=csv"]
SLURM = ["hydra/launcher=slurm_cpu", f"hydra.launcher.partition={PARTITION}", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.mem_gb=2"]


def env(**extra: str) -> dict[str, str]:
    src = str(Path(xferlab.__file__).resolve().parents[1])
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true",
            "PYTHONPATH": os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])]), **extra}


def train(args: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xferlab.train", "-m", *args], cwd=cwd, env=env(**extra),
                          capture_output=True, text=True, timeout=900)


def results(sweep: Path) -> dict[str, dict]:
    """Job folder name -> its metrics.json."""
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))}


def run_infos(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/run_info.json"))}


@pytest.fixture(autouse=True)
def empty_queue(request):
    """Each test starts on an empty queue: a sweep returns once its results are written, while SLURM
    may still be closing the job's steps."""
    if "slurm_cluster" in request.fixturenames:
        request.getfixturevalue("slurm_cluster").wait_until_empty(120)
    yield


@pytest.fixture(scope="module")
def local_root(tmp_path_factory) -> Path:
    """The sweep run locally, one job at a time: `<root>/sweep`, its cache in `<root>/out/cache`."""
    root = tmp_path_factory.mktemp("local")
    proc = train([*SWEEP, f"hydra.sweep.dir={root / 'sweep'}", f"paths.output_root={root / 'out'}"], root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def local_sweep(local_root) -> dict[str, dict]:
    found = results(local_root / "sweep")
    assert len(found) == 4
    return found


def test_a_slurm_sweep_gives_the_local_sweeps_metrics_with_one_extraction_per_backbone(slurm_cluster, local_sweep,
                                                                                     tmp_path):
    proc = train([*SLURM, *SWEEP, f"hydra.sweep.dir={tmp_path / 'sweep'}", f"paths.output_root={tmp_path / 'out'}"],
                 tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    found = results(tmp_path / "sweep")
    assert found == local_sweep  # every key of metrics.json: scores, provenance, fingerprints
    assert list((tmp_path / "sweep" / ".submitit").iterdir())  # it went through sbatch: submitit's folders
    infos = run_infos(tmp_path / "sweep")
    for backbone in ("random", "pixels"):
        hits = [info.get("cache_hit") for name, info in infos.items() if f"backbone={backbone}" in name]
        assert sorted(map(bool, hits)) == [False, True], (backbone, hits)  # built by one task, read by the other


def test_a_cancelled_sweep_finishes_on_a_rerun_with_only_what_was_missing(slurm_cluster, local_sweep, tmp_path):
    args = [*SLURM, *SWEEP, "hydra.launcher.array_parallelism=1", f"hydra.sweep.dir={tmp_path / 'sweep'}",
            f"paths.output_root={tmp_path / 'out'}"]
    first = subprocess.Popen([sys.executable, "-m", "xferlab.train", "-m", *args], cwd=tmp_path, env=env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(results(tmp_path / "sweep")) < 1:
        time.sleep(1)
    assert results(tmp_path / "sweep"), "no job finished within 5 minutes"
    cancelled = slurm_cluster.run("scancel", "--partition", PARTITION)
    assert cancelled.returncode == 0, cancelled.stderr
    # without accounting (sacct) submitit cannot see a cancelled task and waits on: stopped as a user would
    first.send_signal(2)
    try:
        first.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        first.kill()
        first.communicate()
    done = results(tmp_path / "sweep")
    assert 1 <= len(done) < 4  # cancelled part way
    stamps = {name: (tmp_path / "sweep" / name / "metrics.json").stat().st_mtime_ns for name in done}
    slurm_cluster.wait_until_empty(120)
    proc = train(args, tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert results(tmp_path / "sweep") == local_sweep
    assert {n: (tmp_path / "sweep" / n / "metrics.json").stat().st_mtime_ns for n in done} == stamps  # not rerun


def test_a_job_run_as_two_tasks_extracts_with_both_and_gives_the_one_process_results(slurm_cluster, local_root,
                                                                                     local_sweep, tmp_path):
    """`hydra.launcher.tasks_per_node=2`: sbatch --ntasks-per-node=2, srun starts the job twice, the two
    tasks extract as Lightning DDP ranks on gloo and task 0 trains the head and writes the results."""
    proc = train([*SLURM, "hydra.launcher.tasks_per_node=2", *SWEEP[:1], "backbone=random", "seed=0", SWEEP[-1],
                  f"hydra.sweep.dir={tmp_path / 'sweep'}", f"paths.output_root={tmp_path / 'out'}"], tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    (name, found), = results(tmp_path / "sweep").items()
    assert found == local_sweep[name]
    (entry,) = (tmp_path / "out" / "cache").glob("*.zarr")
    local = local_root / "out" / "cache" / entry.name  # the same cache key
    import numpy as np
    import zarr
    a, b = (zarr.open_array(e / "embeddings", mode="r")[:] for e in (local, entry))
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
    info = json.loads((tmp_path / "sweep" / name / "run_info.json").read_text())
    assert info["extract_devices"] == 2 and info["cache_hit"] is False
    log = (tmp_path / "sweep" / name / "train.log").read_text()
    assert "[task 0] rank 0 of 2 wrote" in log and "[task 1] rank 1 of 2 wrote" in log, log[-3000:]


def test_a_partition_that_does_not_exist_stops_the_sweep_before_it_is_submitted(slurm_cluster, tmp_path):
    proc = train([*SLURM[:1], "hydra.launcher.partition=nosuchpartition", *SWEEP,
                  f"hydra.sweep.dir={tmp_path / 'sweep'}", f"paths.output_root={tmp_path / 'out'}"], tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"hydra.launcher.partition=nosuchpartition is not a partition of this cluster; its partitions: " \
           f"['{PARTITION}']" in proc.stderr
    assert not (tmp_path / "sweep").exists() and not slurm_cluster.jobs()


def test_gpus_asked_of_a_partition_without_gpus_name_slurm_cpu(slurm_cluster, tmp_path):
    proc = train(["hydra/launcher=slurm", f"hydra.launcher.partition={PARTITION}", *SWEEP,
                  f"hydra.sweep.dir={tmp_path / 'sweep'}", f"paths.output_root={tmp_path / 'out'}"], tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"hydra.launcher.gpus_per_node=1 but partition {PARTITION} has no GPUs" in proc.stderr
    assert "hydra/launcher=slurm_cpu" in proc.stderr and not (tmp_path / "sweep").exists()


def test_no_cluster_answering_stops_the_sweep_before_it_is_submitted(slurm_cluster, tmp_path):
    dead = tmp_path / "slurm.conf"  # a controller nobody runs
    dead.write_text(slurm_cluster.conf.read_text().replace(
        next(line for line in slurm_cluster.conf.read_text().splitlines() if line.startswith("SlurmctldPort=")),
        "SlurmctldPort=9"))
    proc = train([*SLURM, *SWEEP, f"hydra.sweep.dir={tmp_path / 'sweep'}", f"paths.output_root={tmp_path / 'out'}"],
                 tmp_path, SLURM_CONF=str(dead))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "hydra/launcher=slurm: no SLURM cluster answers (sinfo:" in proc.stderr
    assert not (tmp_path / "sweep").exists()
