"""How many samples (crops, or whole fields) each target gave, per dataset of an experiment: one
line in the report and every target's count in `samples_per_target.csv`, from what the jobs
recorded (`samples_per_target` in metrics.json and run_info.json)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from xferlab.reporting.aggregate import read_run_info
from xferlab.runtime.io import atomic_write_text


def samples_per_target(group: pd.DataFrame, folder: Path) -> str | None:
    """The report's line on samples per target (one part per dataset and fingerprint), with every
    target's count written to `folder/samples_per_target.csv`; None for runs that did not record it."""
    if not {"samples_per_target", "dataset", "data_fingerprint"} <= set(group.columns):
        return None
    parts, tables = [], []
    for (dataset, fingerprint), runs in group.groupby(["dataset", "data_fingerprint"], sort=True):
        recorded = [s for s in runs["samples_per_target"] if isinstance(s, dict) and s.get("targets")]
        if not recorded:
            continue
        summary = recorded[0]
        parts.append(f"{dataset} ({str(fingerprint)[:8]}): {summary['targets']} targets, {summary['min']}-"
                     f"{summary['max']} samples each (median {summary['median']:g})")
        counts = per_target(Path(runs["run_dir"].iloc[0]))
        if counts:
            tables.append(pd.DataFrame({"dataset": dataset, "data_fingerprint": fingerprint,
                                        "target": list(counts), "samples": list(counts.values())}))
    if not parts:
        return None
    if tables:
        atomic_write_text(folder / "samples_per_target.csv", pd.concat(tables).to_csv(index=False))
    return ("samples per target in the jobs' splits (crops or fields; every target's count in "
            "samples_per_target.csv): " + "; ".join(parts))


def per_target(run_dir: Path) -> dict[str, int]:
    counts = read_run_info(run_dir).get("samples_per_target")
    return dict(counts) if isinstance(counts, dict) else {}
