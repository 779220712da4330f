"""Report figures (PNG): every run as a point over its condition's mean and interval, per-class F1
(forest plot with intervals, heat map), confusion matrix, F1 against a swept number (label
fraction, k), and a 2-D map of each condition's test embeddings."""

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


def dot_chart(table: pd.DataFrame, path: Path, metric: str = "test/macro_f1") -> Path:
    """Each condition's runs as points, its mean as a bar across them and its 95 % interval over test
    proteins as a line; the axis fitted to the data (differences, not the 0-1 range, are the point)."""
    fig, ax = plt.subplots(figsize=(5.5, 0.45 * len(table) + 1.2))
    y = np.arange(len(table))[::-1]
    for yi, (_, r) in zip(y, table.iterrows()):
        values = r["_runs"][metric].dropna().to_numpy(float)
        ax.scatter(values, np.full(len(values), yi) + np.linspace(-0.12, 0.12, len(values)), s=12, color="#4C72B0",
                   alpha=0.7, zorder=3, label="runs" if yi == y[0] else None)
        ax.plot([r[f"{metric}/mean"]] * 2, [yi - 0.3, yi + 0.3], color="black", lw=2, zorder=4,
                label="mean" if yi == y[0] else None)
        lo, hi = r.get(f"{metric}/boot_low"), r.get(f"{metric}/boot_high")
        if lo is not None and pd.notna(lo):
            ax.plot([lo, hi], [yi, yi], color="#DD8452", lw=1.5, zorder=2,
                    label="95% interval over test proteins" if yi == y[0] else None)
    ax.set_yticks(y, table["condition"])
    ax.set_xlabel(metric.split("/", 1)[1].replace("_", " ").replace("f1", "F1") + " (test)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def forest(per_class: pd.DataFrame, path: Path) -> Path:
    """Per-class test F1 with its 95 % interval over test proteins, one panel per condition; each
    class labelled with its number of test proteins."""
    names = list(dict.fromkeys(per_class["condition"]))
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names) + 1.5, 0.32 * per_class["class"].nunique() + 1.5),
                             sharey=True, squeeze=False)
    for ax, name in zip(axes[0], names):
        rows = per_class[per_class["condition"] == name].reset_index(drop=True)
        y = np.arange(len(rows))[::-1]
        ax.errorbar(rows["f1"], y, xerr=[(rows["f1"] - rows["ci_low"]).clip(lower=0),
                                         (rows["ci_high"] - rows["f1"]).clip(lower=0)],
                    fmt="o", ms=3, capsize=2, color="#4C72B0")
        ax.set_title(name, fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_xlabel("test F1")
        ax.grid(axis="x", alpha=0.3)
    labels = [f"{c} (n={n:g})" for c, n in zip(rows["class"], rows["test_proteins"])]
    axes[0][0].set_yticks(np.arange(len(labels))[::-1], labels, fontsize=7)
    return _save(fig, path)


def heat_map(matrix: pd.DataFrame, path: Path, title: str, fmt: str = "{:.2f}", xlabel: str = "",
             ylabel: str = "") -> Path:
    fig, ax = plt.subplots(figsize=(0.6 * matrix.shape[1] + 3, 0.45 * matrix.shape[0] + 2))
    im = ax.imshow(matrix.to_numpy(float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=45, ha="right")
    ax.set_yticks(range(matrix.shape[0]), matrix.index)
    for (i, j), v in np.ndenumerate(matrix.to_numpy(float)):
        ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax, fraction=0.03, label="F1" if "F1" in title else "share of the true class")
    return _save(fig, path)


def curve(runs: pd.DataFrame, x: str, series: str, path: Path, metric: str = "test/macro_f1",
          log_x: bool = False) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, group in runs.groupby(series):
        agg = group.groupby(x)[metric].agg(["mean", "std"]).sort_index()
        ax.errorbar(agg.index, agg["mean"], yerr=agg["std"].fillna(0), marker="o", capsize=3, label=str(name))
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(metric.split("/", 1)[-1].replace("_", " ").replace("f1", "F1") + " (test)")
    ax.legend(fontsize=7, title=series.replace("_", " "), title_fontsize=7)
    return _save(fig, path)


METHOD_NAMES = {"umap": "UMAP", "tsne": "t-SNE", "pca": "PCA"}


def embedding_maps(maps: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, method: str) -> Path:
    """One panel per condition: its test embeddings in 2-D, each point a crop coloured by its class
    (the same colour for a class in every panel; one legend)."""
    classes = sorted({c for _, labels in maps.values() for c in labels})
    colours = dict(zip(classes, plt.get_cmap("tab20")(np.linspace(0, 1, 20))[: len(classes)]))
    n = len(maps)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n + 2.2, 3.6), squeeze=False)
    name = METHOD_NAMES.get(method, method)
    for ax, (condition, (points, labels)) in zip(axes[0], maps.items()):
        for c in classes:
            at = labels == c
            ax.scatter(points[at, 0], points[at, 1], s=3, color=colours[c], alpha=0.7, linewidths=0, label=c)
        ax.set_title(f"{condition} (n={len(points)})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{name} 1", fontsize=8)
        ax.set_ylabel(f"{name} 2", fontsize=8)
    handles = [plt.Line2D([], [], marker="o", ls="", color=colours[c], label=c) for c in classes]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, title="class",
               title_fontsize=8, frameon=False)
    fig.suptitle(f"test embeddings, {name} of each condition's first run", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
