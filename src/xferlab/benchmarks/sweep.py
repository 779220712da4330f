"""What a five-seed sweep costs over a one-seed run: `python -m xferlab.train -m seed=0,1,2,3,4` against
`python -m xferlab.train seed=0`, each as its own process with a cold embedding cache (a fresh cache
folder each) and the image store already built (built first, untimed, shared by both).

Embeddings are computed once per sweep, so the ideal ratio is (extraction + 5 heads) / (extraction +
1 head) plus start-up. The rows carry the parts from each job's `run_info.json`: the extraction, and
per job the head fit and the whole job, so a missed target says which part to make faster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

TARGET_RATIO = 1.5


def default_data_dir() -> Path:
    """Where `python -m xferlab.train` keeps its stores by default (`$XFERLAB_ROOT/outputs/data`)."""
    return (Path(os.environ.get("XFERLAB_ROOT", ".")) / "outputs" / "data").resolve()


def build_store(overrides: Sequence[str], data_dir: Path) -> tuple[str, int]:
    """Build (or open) the store the jobs will read; returns its name and size."""
    from xferlab.benchmarks.common import compose_config
    from xferlab.runtime.building import build

    cfg = compose_config([*overrides, "paths.output_dir=unused"])
    store = build(cfg.dataset).open(data_dir)
    return cfg.dataset.name, len(store)


def run_train(args: Sequence[str], cwd: Path) -> float:
    """Wall seconds of `python -m xferlab.train <args>` in a fresh process, running this very xferlab."""
    import xferlab

    src = str(Path(xferlab.__file__).resolve().parents[1])
    env = {"HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", **os.environ}
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "xferlab.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"python -m xferlab.train {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds


def job_parts(folder: Path) -> list[dict[str, Any]]:
    """Per job under `folder` (by seed): cache hit, extraction, head fit and job seconds."""
    jobs = []
    for info_path in sorted(folder.glob("**/run_info.json")):
        info = json.loads(info_path.read_text())
        seed = json.loads((info_path.parent / "metrics.json").read_text())["seed"]
        jobs.append({"seed": seed, "cache_hit": info["cache_hit"],
                     "extract_seconds": round(info.get("extract_seconds", 0.0), 2),
                     # None: the entry was complete when the job looked, so it never queued on the lock
                     "lock_wait_seconds": None if "lock_wait_seconds" not in info else round(info["lock_wait_seconds"], 2),
                     "fit_seconds": round(info["fit_seconds"], 2), "job_seconds": round(info["total_seconds"], 2)})
    return sorted(jobs, key=lambda j: j["seed"])


def bench_sweep_cost(seeds: int = 5, overrides: Sequence[str] = (), data_dir: str | Path | None = None,
                     workdir: str | Path | None = None) -> list[dict[str, Any]]:
    """Wall time of a `seeds`-seed sweep over a one-seed run, both from a cold embedding cache.

    Defaults: the default job (SynthCell, `random` backbone, linear head, W&B offline); the store in
    the default data folder (built there first if missing). `overrides` go to both runs (and pick
    the store), e.g. `["experiment=smoke", "logger=csv"]` for a quick check.
    """
    data_dir = Path(data_dir).resolve() if data_dir is not None else default_data_dir()
    dataset, n_samples = build_store(overrides, data_dir)
    with tempfile.TemporaryDirectory(prefix="xferlab-bench-sweep-", dir=workdir) as tmp:
        tmp = Path(tmp)
        common = [*overrides, f"paths.data_dir={data_dir}"]
        one_dir, sweep_dir = tmp / "one", tmp / "sweep"
        # each run its own outputs root, hence its own (empty) embedding cache
        one_seconds = run_train([*common, "seed=0", f"paths.root_dir={one_dir}", f"hydra.run.dir={one_dir / 'run'}"],
                                cwd=tmp)
        seed_list = ",".join(str(s) for s in range(seeds))
        sweep_seconds = run_train(["-m", *common, f"seed={seed_list}", f"paths.root_dir={sweep_dir}",
                                   f"hydra.sweep.dir={sweep_dir / 'sweep'}"], cwd=tmp)
        one_jobs, sweep_jobs = job_parts(one_dir / "run"), job_parts(sweep_dir / "sweep")
    detail = {"dataset": dataset, "n_samples": n_samples, "seeds": seeds, "overrides": list(overrides)}
    return sweep_rows(one_seconds, sweep_seconds, one_jobs, sweep_jobs, detail)


def sweep_rows(one_seconds: float, sweep_seconds: float, one_jobs: list[dict[str, Any]],
               sweep_jobs: list[dict[str, Any]], detail: dict[str, Any]) -> list[dict[str, Any]]:
    """The result rows: the ratio against its target, then its parts."""
    seeds = detail["seeds"]
    if len(one_jobs) != 1 or len(sweep_jobs) != seeds:
        raise RuntimeError(f"expected 1 and {seeds} finished jobs, found {len(one_jobs)} and {len(sweep_jobs)}")
    misses = [j for j in sweep_jobs if not j["cache_hit"]]
    if one_jobs[0]["cache_hit"] or len(misses) != 1:
        raise RuntimeError(f"a cold cache should give one extraction per run: {one_jobs} / {sweep_jobs}")
    ratio = sweep_seconds / one_seconds
    outside_one = one_seconds - one_jobs[0]["job_seconds"]
    outside_sweep = sweep_seconds - sum(j["job_seconds"] for j in sweep_jobs)
    return [
        {"benchmark": f"sweep_cost/{seeds}_seeds_over_1", "value": round(ratio, 2), "unit": "x",
         "target": TARGET_RATIO, "meets_target": ratio <= TARGET_RATIO,
         "one_seed_seconds": round(one_seconds, 1), "sweep_seconds": round(sweep_seconds, 1),
         "extract_seconds": {"one_seed": one_jobs[0]["extract_seconds"], "sweep": misses[0]["extract_seconds"]},
         "fit_seconds_per_job": [j["fit_seconds"] for j in sweep_jobs],
         "job_seconds_per_job": [j["job_seconds"] for j in sweep_jobs], **detail},
        {"benchmark": "sweep_cost/extract", "value": misses[0]["extract_seconds"], "unit": "s",
         "one_seed_extract_seconds": one_jobs[0]["extract_seconds"], **detail},
        {"benchmark": "sweep_cost/head_fit_per_job", "value": round(sum(j["fit_seconds"] for j in sweep_jobs) / seeds, 2),
         "unit": "s", "per_job": sweep_jobs, "one_seed_job": one_jobs[0], **detail},
        {"benchmark": "sweep_cost/outside_jobs", "value": round(outside_sweep, 1), "unit": "s",
         "one_seed_seconds": round(outside_one, 1),
         "what": "wall time minus the jobs' own: process start-up, imports, Hydra, writing results, W&B finishing",
         **detail},
    ]
