"""Collect the `metrics.json` of finished jobs and summarise them per condition over seeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

CONDITION_KEYS = ("experiment", "dataset", "backbone", "channels", "head")
METRICS = ("test/macro_f1", "test/accuracy")


def collect_runs(dirs: Iterable[str | Path]) -> pd.DataFrame:
    """One row per `metrics.json` found under the given run or sweep directories."""
    rows = []
    for d in dirs:
        d = Path(d)
        if not d.exists():
            raise FileNotFoundError(f"{d} does not exist; pass a run or sweep directory")
        for path in sorted(d.rglob("metrics.json")):
            with open(path) as f:
                rows.append({**json.load(f), "run_dir": str(path.parent)})
    if not rows:
        raise FileNotFoundError(f"no metrics.json under {[str(d) for d in dirs]}: no finished job there")
    return pd.DataFrame(rows)


def summarize(runs: pd.DataFrame, by: Sequence[str] = CONDITION_KEYS, metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Mean, sample standard deviation and seed count of each metric per condition, best first."""
    by = [k for k in by if k in runs.columns]
    rows = []
    for key, group in runs.groupby(by, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        row["n_seeds"] = int(group["seed"].nunique()) if "seed" in group else len(group)
        for m in metrics:
            values = group[m].to_numpy(dtype=np.float64)
            row[f"{m}/mean"] = float(values.mean())
            row[f"{m}/std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.sort_values(f"{metrics[0]}/mean", ascending=False, kind="stable").reset_index(drop=True)


def to_markdown(table: pd.DataFrame, metrics: Sequence[str] = METRICS) -> str:
    keys = [c for c in table.columns if c in CONDITION_KEYS]
    header = keys + ["n"] + [m.split("/", 1)[1] for m in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [str(row[k]) for k in keys] + [str(row["n_seeds"])]
        for m in metrics:
            std = row[f"{m}/std"]
            cells.append(f"{row[f'{m}/mean']:.4f} ± {std:.4f}" if np.isfinite(std) else f"{row[f'{m}/mean']:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
