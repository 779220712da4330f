"""Collect the `metrics.json` of finished jobs, and the keys that tell conditions apart.

A job folder (one holding Hydra's `.hydra/` or a `metrics.json`) whose `metrics.json` is missing,
unreadable or lacks its primary score is left out and listed with the reason; the other jobs are
reported. A run from before a metric existed is kept: the metric shows as missing for it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

import pandas as pd

from xferlab.metrics import DEFAULT_AVERAGE_OVER, reported

# What tells two conditions of one experiment apart by name in metrics.json (runs differing only in
# the replicate keys are repeats); every setting the sweep varied besides these tells them apart too
# (`reporting.conditions`). `finetune` is in runs from before fine-tuning became `head=finetune`.
CONDITION_KEYS = ("dataset", "backbone", "channels", "head", "features", "label_fraction", "finetune",
                  "macro_f1_average_over")
PRIMARY = "test/macro_f1"
METRICS = tuple(reported("test/"))  # every single-number test metric, in `xferlab.metrics` order
REQUIRED_KEYS = ("experiment", "seed", PRIMARY)
PREDICTION_COLUMNS = ("target", "label", "pred")
RERUN = "rerun the sweep into the same folder (hydra.sweep.dir=<sweep dir>) to redo it"


def job_dirs(root: Path) -> list[Path]:
    """The job folders under `root` (itself included): those holding `.hydra/` or `metrics.json`."""
    found = {p.parent for p in root.rglob("metrics.json") if p.is_file()}
    found |= {p.parent for p in root.rglob(".hydra") if p.is_dir()}
    return sorted(found)


def read_metrics(run_dir: Path) -> tuple[dict | None, str | None]:
    """(metrics, None) for a usable `metrics.json`, else (None, why it is left out)."""
    path = run_dir / "metrics.json"
    if not path.exists():
        return None, ("no metrics.json: the job did not finish (it failed, was interrupted or is still running); "
                      + RERUN)
    try:
        metrics = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"metrics.json is unreadable, truncated or not JSON ({type(err).__name__}: {err}); {RERUN}"
    if not isinstance(metrics, dict):
        return None, f"metrics.json holds a {type(metrics).__name__}, not a mapping of metrics; {RERUN}"
    missing = [k for k in REQUIRED_KEYS if k not in metrics]
    if missing:
        return None, f"metrics.json lacks {missing}; {RERUN}"
    bad = [k for k in METRICS if k in metrics
           and (not isinstance(metrics[k], (int, float)) or not math.isfinite(metrics[k]))]
    if bad:
        return None, f"metrics.json holds no finite number for {bad}; {RERUN}"
    return metrics, None


def read_run_info(run_dir: str | Path) -> dict:
    """A job's `run_info.json` (what it did: cache hit, times, samples per target), or {} when it is
    missing or unreadable: the report only describes with it, never scores."""
    try:
        info = json.loads((Path(run_dir) / "run_info.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return info if isinstance(info, dict) else {}


def predictions_problem(run_dir: Path, n_test: int | None) -> str | None:
    """Why a job's `predictions.csv` cannot be used (missing, unreadable, truncated), or None."""
    path = run_dir / "predictions.csv"
    if not path.exists():
        return "predictions.csv is missing"
    try:
        table = pd.read_csv(path)
    except Exception as err:  # noqa: BLE001 - pandas raises several types for damaged files
        return f"predictions.csv is unreadable ({type(err).__name__}: {err})"
    missing = [c for c in PREDICTION_COLUMNS if c not in table.columns]
    if missing:
        return f"predictions.csv lacks column(s) {missing}"
    if table[list(PREDICTION_COLUMNS)].isna().any().any() or (n_test is not None and len(table) != n_test):
        return f"predictions.csv is truncated ({len(table)} complete rows for {n_test} test samples)"
    return None


def scan_runs(dirs: Iterable[str | Path]) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """(one row per usable job, [(job folder, why it was left out)]). Each row holds the job's
    metrics, `run_dir`, and `predictions_problem` (None when its predictions.csv is usable).
    Runs from before `macro_f1_average_over` was recorded averaged over present classes."""
    dirs = [Path(d) for d in dirs]
    rows, problems = [], []
    for d in dirs:
        if not d.exists():
            raise FileNotFoundError(f"{d} does not exist; pass a run or sweep directory")
        for run_dir in job_dirs(d):
            metrics, problem = read_metrics(run_dir)
            if problem is not None:
                problems.append((str(run_dir), problem))
                continue
            n_test = metrics.get("n_test") if isinstance(metrics.get("n_test"), int) else None
            rows.append({**metrics, "run_dir": str(run_dir), "predictions_problem": predictions_problem(run_dir, n_test)})
    runs = pd.DataFrame(rows)
    if len(runs):
        column = runs.get("macro_f1_average_over", pd.Series(index=runs.index, dtype=object))
        runs["macro_f1_average_over"] = column.fillna(DEFAULT_AVERAGE_OVER)
    return runs, problems


def collect_runs(dirs: Iterable[str | Path]) -> pd.DataFrame:
    """One row per usable `metrics.json` under the given run or sweep directories (see `scan_runs`);
    an error when there is none, naming every job folder left out and why."""
    dirs = list(dirs)
    runs, problems = scan_runs(dirs)
    if not len(runs):
        listed = "".join(f"\n  {d}: {why}" for d, why in problems)
        raise FileNotFoundError(f"no metrics.json under {[str(d) for d in dirs]}: no finished job there{listed}")
    return runs
