"""Report figures (PNG): bar chart with error bars, per-class F1 heat map, confusion matrix, and
F1 against a swept number (label fraction, k)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from xferlab.runtime.io import temp_sibling  # noqa: E402


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)
    tmp.replace(path)
    return path


def bar_chart(table: pd.DataFrame, label_col: str, path: Path, metric: str = "test/macro_f1") -> Path:
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(table) + 2), 3.5))
    x = np.arange(len(table))
    ax.bar(x, table[f"{metric}/mean"], yerr=table[f"{metric}/std"].fillna(0), capsize=4, color="#4C72B0")
    ax.set_xticks(x, table[label_col], rotation=30, ha="right")
    ax.set_ylabel(f"{metric} (mean ± std over seeds)")
    ax.set_ylim(0, 1)
    return _save(fig, path)


def heat_map(matrix: pd.DataFrame, path: Path, title: str, fmt: str = "{:.2f}") -> Path:
    fig, ax = plt.subplots(figsize=(0.6 * matrix.shape[1] + 3, 0.45 * matrix.shape[0] + 2))
    im = ax.imshow(matrix.to_numpy(float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=45, ha="right")
    ax.set_yticks(range(matrix.shape[0]), matrix.index)
    for (i, j), v in np.ndenumerate(matrix.to_numpy(float)):
        ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.03)
    return _save(fig, path)


def curve(runs: pd.DataFrame, x: str, series: str, path: Path, metric: str = "test/macro_f1",
          log_x: bool = False) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, group in runs.groupby(series):
        agg = group.groupby(x)[metric].agg(["mean", "std"]).sort_index()
        ax.errorbar(agg.index, agg["mean"], yerr=agg["std"].fillna(0), marker="o", capsize=3, label=str(name))
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    return _save(fig, path)
