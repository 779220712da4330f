"""What an experiment's jobs cost, from each job's `run_info.json`: the extractions its sweep ran
(cache misses) and how fast, the head fits, and the jobs' own time. Written beside the tables as
`cost.md`, so a quoted time is as reproducible a file as the scores."""

from __future__ import annotations

import pandas as pd

from xferlab.reporting.aggregate import read_run_info


def job_costs(run_dirs: pd.Series) -> pd.DataFrame:
    """One row per job: cache hit, extraction seconds and images/s (misses only), head and job seconds."""
    rows = []
    for run_dir in run_dirs:
        info = read_run_info(run_dir)
        rows.append({"run_dir": str(run_dir), "cache_hit": info.get("cache_hit"),
                     "extract_seconds": info.get("extract_seconds"), "images_per_second": info.get("images_per_second"),
                     "head_seconds": info.get("head_seconds", info.get("fit_seconds")),
                     "job_seconds": info.get("total_seconds")})
    return pd.DataFrame(rows)


def _spread(values: pd.Series, fmt: str = ".1f") -> str:
    values = values.dropna().astype(float)
    if not len(values):
        return "–"
    return f"{values.min():{fmt}} / {values.median():{fmt}} / {values.max():{fmt}}"


def cost_markdown(costs: pd.DataFrame) -> str:
    """The costs of an experiment's jobs as a one-row Markdown table (min / median / max where a
    quantity varies between jobs); jobs without a run_info.json count as unknown."""
    known = costs["job_seconds"].notna()
    misses = costs[costs["cache_hit"] == False]  # noqa: E712  (None: unknown)
    jobs_s = costs.loc[known, "job_seconds"].astype(float)
    lines = ["| jobs | extractions (cache misses) | extraction, s: min / median / max | extraction, images/s: min / "
             "median / max | head, s per job: min / median / max | the jobs' own time, sum |", "|---" * 6 + "|",
             f"| {len(costs)}" + (f" ({int((~known).sum())} without run_info.json)" if (~known).any() else "")
             + f" | {len(misses)} | {_spread(misses['extract_seconds'])} | {_spread(misses['images_per_second'], '.0f')} | "
             f"{_spread(costs['head_seconds'])} | {_minutes(float(jobs_s.sum()))} |"]
    return "\n".join(lines) + "\n"


def _minutes(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)  # rounded once: 119.7 s is 2 min 0 s, not 1 min 60 s
    return f"{whole // 60} min {whole % 60} s"
