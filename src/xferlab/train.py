"""`python -m xferlab.train`: extract (cached) embeddings, train a head, write the run's results.

    python -m xferlab.train                                    # the default job
    python -m xferlab.train backbone=random seed=0,1,2,3,4 -m  # a five-seed sweep
    python -m xferlab.train -m hydra/launcher=joblib hydra.launcher.n_jobs=4 seed=0,1,2,3,4  # in parallel
    python -m xferlab.train -m hydra/launcher=slurm hydra.launcher.partition=<p> seed=0,1,2,3,4  # on SLURM
    python -m xferlab.train --help                             # config groups and options
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

import xferlab.runtime.resolvers  # noqa: F401 - registers the resolvers the configs use


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
    score = f"[{name}] test/macro_f1={metrics['test/macro_f1']:.4f}"
    run_dir = shown_path(run_dir)
    if info.get("skipped"):
        return f"{score}  already done  -> {run_dir}"
    seconds = info.get("total_seconds")
    cache = {True: "cache hit", False: "extracted"}.get(info.get("cache_hit"), "no embeddings")
    took = f"{seconds:6.1f} s" if seconds is not None else "     ? s"
    return f"{score}  {took}  {cache:<9}  -> {run_dir}"


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from xferlab.job import run_job  # imported here so that --help stays fast

    result = run_job(cfg)
    print(job_line(result.name, result.metrics, result.info, result.run_dir), flush=True)
    return float(result.metrics["test/macro_f1"])


if __name__ == "__main__":
    main()
