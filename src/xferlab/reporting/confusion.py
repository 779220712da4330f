"""Confusion matrices from saved predictions, and the class pairs a model mixes up most."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd


def confusion_from_runs(run_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """Row-normalised confusion matrix (true class x predicted class) summed over runs' test
    predictions (`predictions.csv`, single-label)."""
    frames = [pd.read_csv(Path(d) / "predictions.csv") for d in run_dirs]
    if not frames:
        raise ValueError("no runs given")
    table = pd.concat(frames)
    classes = sorted(set(table["label_name"]) | set(table["pred_name"]))
    counts = pd.crosstab(table["label_name"], table["pred_name"]).reindex(index=classes, columns=classes, fill_value=0)
    return counts.div(counts.sum(axis=1).replace(0, 1), axis=0)


def top_confusions(matrix: pd.DataFrame, n: int = 8) -> list[tuple[str, str, float]]:
    """The `n` largest off-diagonal entries: (true class, predicted class, fraction of the true class)."""
    values = matrix.to_numpy().copy()
    np.fill_diagonal(values, -1)
    order = np.argsort(values, axis=None)[::-1][:n]
    rows, cols = np.unravel_index(order, values.shape)
    return [(matrix.index[r], matrix.columns[c], float(values[r, c])) for r, c in zip(rows, cols) if values[r, c] > 0]
