"""`python -m xferlab.train`: extract (cached) embeddings, train a head, write the run's results.

    python -m xferlab.train                                    # the default job
    python -m xferlab.train backbone=random seed=0,1,2,3,4 -m  # a five-seed sweep
    python -m xferlab.train -m hydra/launcher=joblib hydra.launcher.n_jobs=4 seed=0,1,2,3,4  # in parallel
    python -m xferlab.train -m hydra/launcher=slurm hydra.launcher.partition=<p> seed=0,1,2,3,4  # on SLURM
    python -m xferlab.train --help                             # config groups and options
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import xferlab.runtime.resolvers  # noqa: F401 - registers the resolvers the configs use
from xferlab.runtime.console import job_line


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from xferlab.job import run_job  # imported here so that --help stays fast

    result = run_job(cfg)
    print(job_line(result.name, result.metrics, result.info, result.run_dir), flush=True)
    if result.helper_task is not None:  # a SLURM task that only helped extract: task 0 has the score
        return float("nan")
    return float(result.metrics["test/macro_f1"])


if __name__ == "__main__":
    main()
