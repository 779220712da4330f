"""What a sweep prints on the console: a first line (the number of jobs and the sweep folder, from
the check before the jobs), then one line per job. Everything else a job logs goes to its
`train.log` (conf/hydra/default.yaml: `job_logging`); `verbose=true` prints it too."""

from __future__ import annotations

from pathlib import Path


def shown_path(path) -> str:
    """`path` relative to the working folder when it lies inside it (shorter lines), else as is."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def job_line(name: str, metrics: dict, info: dict, run_dir) -> str:
    """The one console line of a job: its name, test macro F1, time, whether its embeddings came
    from the cache, and its run folder (everything else is in the folder's train.log)."""
    run_dir = shown_path(run_dir)
    if "helper_task" in info:  # a SLURM task other than 0 of a job run as several (runtime.slurm_tasks)
        return f"[{name}] SLURM task {info['helper_task']} helped extract; task 0 writes the results -> {run_dir}"
    score = f"[{name}] test/macro_f1={metrics['test/macro_f1']:.4f}"
    if info.get("skipped"):
        return f"{score}  already done  -> {run_dir}"
    seconds = info.get("total_seconds")
    cache = {True: "cache hit", False: "extracted"}.get(info.get("cache_hit"), "no embeddings")
    took = f"{seconds:6.1f} s" if seconds is not None else "     ? s"
    return f"{score}  {took}  {cache:<9}  -> {run_dir}"


def sweep_line(n_jobs: int, sweep_dir) -> str:
    """The sweep's first console line, once every input of every job was checked."""
    return f"{n_jobs} job(s), every input checked -> {shown_path(sweep_dir)}"
