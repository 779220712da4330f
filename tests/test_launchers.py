"""Sweep launchers: `hydra/launcher=joblib` runs jobs in parallel processes that share one embedding
extraction; `hydra/launcher=slurm` composes and writes the sbatch script it would submit."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import xferlab
from tests.conftest import CONF_DIR, SMOKE

# the job log with the process id, to tell which process ran a job
PID_LOG_FORMAT = "hydra.job_logging.formatters.simple.format='[%(asctime)s][pid %(process)d][%(name)s] - %(message)s'"


def start_train(args: list[str], cwd: Path, path_prefix: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    src = str(Path(xferlab.__file__).resolve().parents[1])  # the xferlab under test, whatever the cwd
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.Popen([sys.executable, "-m", "xferlab.train", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen, timeout: int = 300) -> subprocess.CompletedProcess:
    """Wait for `python -m xferlab.train`; the result's `args` holds its process id."""
    with proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    return subprocess.CompletedProcess([str(proc.pid)], proc.returncode, stdout, stderr)


def train_cli(args: list[str], cwd: Path, path_prefix: Path | None = None) -> subprocess.CompletedProcess:
    return finish(start_train(args, cwd, path_prefix))


def job_pids(job: Path) -> set[str]:
    return set(re.findall(r"\[pid (\d+)\]", (job / "train.log").read_text()))


def sweep_jobs(root: Path) -> tuple[Path, dict[str, Path]]:
    sweeps = list((root / "outputs" / "sweeps" / "smoke").iterdir())
    assert len(sweeps) == 1, sweeps
    return sweeps[0], {p.name: p for p in sorted(sweeps[0].iterdir()) if p.is_dir() and not p.name.startswith(".")}


def files_of(job: Path) -> set[str]:
    skip = ("wandb", ".hydra")
    return {str(p.relative_to(job)) for p in job.rglob("*") if p.is_file() and not str(p.relative_to(job)).startswith(skip)}


def test_joblib_jobs_run_in_parallel_processes_extract_once_and_match_a_sequential_sweep(tmp_path):
    seeds = "seed=0,1,2,3"  # four jobs started at once, all needing the same embeddings
    # both sweeps at once (separate roots, so separate caches): the test waits for the slower only
    parallel = start_train(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", *SMOKE, seeds, "verbose=true",
                            f"paths.root_dir={tmp_path / 'parallel'}", PID_LOG_FORMAT], cwd=tmp_path)
    sequential = start_train(["-m", *SMOKE, seeds, f"paths.root_dir={tmp_path / 'sequential'}", PID_LOG_FORMAT],
                             cwd=tmp_path)
    parallel, sequential = finish(parallel), finish(sequential)
    assert parallel.returncode == 0, parallel.stderr[-3000:]
    assert sequential.returncode == 0, sequential.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=4" in parallel.stdout + parallel.stderr  # Hydra's launcher line: verbose=true
    assert "Joblib.Parallel" not in sequential.stdout + sequential.stderr

    _, par = sweep_jobs(tmp_path / "parallel")
    _, seq = sweep_jobs(tmp_path / "sequential")
    assert list(par) == list(seq) == [f"logger=csv,seed={s}" for s in range(4)]
    # each job wrote the same files into its run folder as under the basic launcher
    for name in par:
        assert files_of(par[name]) == files_of(seq[name]), name
    # the basic launcher runs every job in the launching process, joblib in worker processes
    assert all(job_pids(job) == set(sequential.args) for job in seq.values())
    par_pids = [job_pids(job) for job in par.values()]
    assert all(len(p) == 1 for p in par_pids) and set().union(*par_pids).isdisjoint(parallel.args)

    # all jobs needed the same embeddings: exactly one extracted, the others read the cache
    infos = {name: json.loads((job / "run_info.json").read_text()) for name, job in par.items()}
    assert sorted(i["cache_hit"] for i in infos.values()) == [False, True, True, True], infos
    assert len({i["cache_key"] for i in infos.values()}) == 1
    assert len(list((tmp_path / "parallel" / "outputs" / "cache").glob("*.zarr"))) == 1
    for name, info in infos.items():
        log = (par[name] / "train.log").read_text()
        assert ("embedding cache hit" in log) == info["cache_hit"], name

    for name in par:
        a = json.loads((par[name] / "metrics.json").read_text())
        b = json.loads((seq[name] / "metrics.json").read_text())
        assert a == b, name


def compose_with_hydra(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


def test_slurm_launcher_composes_with_the_documented_settings():
    cfg = compose_with_hydra(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"])
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.partition == "gpu" and launcher.account is None
    assert (launcher.timeout_min, launcher.cpus_per_task, launcher.gpus_per_node, launcher.mem_gb) == (120, 8, 1, 32)
    assert (launcher.tasks_per_node, launcher.nodes, launcher.array_parallelism) == (1, 1, 16)
    assert launcher.max_num_timeout == 0
    assert launcher.name == "xferlab-default"
    # logs go inside the sweep folder, beside the jobs' run folders
    assert cfg.hydra.launcher.submitit_folder.startswith(cfg.hydra.sweep.dir + "/.submitit/")
    assert compose_with_hydra(["hydra/launcher=joblib"]).hydra.launcher._target_.endswith("JoblibLauncher")


def test_slurm_sweep_writes_one_job_array_script_into_the_sweep_dir(tmp_path):
    """A stand-in `sbatch` refuses the submission: nothing runs, but submitit has written the script
    (a stand-in `sinfo` answers the check before submission with the partition)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sbatch", "srun"):  # submitit looks for srun; the script would call it on the cluster
        (bin_dir / tool).write_text(f"#!/bin/sh\necho '{tool}: stand-in for the tests, nothing submitted' >&2\nexit 1\n")
        (bin_dir / tool).chmod(0o755)
    (bin_dir / "sinfo").write_text("#!/bin/sh\necho 'testpart*|gpu:a100:4'\n")  # a cluster with that partition
    (bin_dir / "sinfo").chmod(0o755)
    proc = train_cli(["-m", "hydra/launcher=slurm", "hydra.launcher.partition=testpart", "hydra.launcher.account=lab",
                      *SMOKE, "seed=0,1,2", f"paths.root_dir={tmp_path}"], cwd=tmp_path, path_prefix=bin_dir)
    assert proc.returncode != 0 and "sbatch: stand-in for the tests, nothing submitted" in proc.stderr
    sweep, jobs = sweep_jobs(tmp_path)
    assert jobs == {}  # no job ran here
    scripts = list((sweep / ".submitit").glob(".submission_file_*.sh"))
    assert len(scripts) == 1, scripts
    script = scripts[0].read_text()
    flags = dict(re.findall(r"#SBATCH --([\w-]+)(?:=(\S+))?", script))
    assert flags["array"] == "0-2%3"  # three jobs, at most array_parallelism at once
    assert flags["partition"] == "testpart" and flags["account"] == "lab"
    assert (flags["time"], flags["cpus-per-task"], flags["gpus-per-node"], flags["mem"]) == ("120", "8", "1", "32GB")
    assert (flags["nodes"], flags["ntasks-per-node"], flags["job-name"]) == ("1", "1", "xferlab-smoke")
    assert flags["output"].startswith(str(sweep / ".submitit")) and flags["error"].startswith(str(sweep / ".submitit"))
    assert "submitit.core._submit" in script and sys.executable in script
