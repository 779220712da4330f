"""Statistics over seeds and over test targets: confidence intervals, paired tests against the
best condition, and a bootstrap over test targets for the uncertainty of the split itself."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from xferlab.metrics import DEFAULT_AVERAGE_OVER, macro_f1_score


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean (NaN for fewer than two values)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean() - half), float(v.mean() + half)


def paired_tests(best: pd.Series, other: pd.Series) -> dict[str, float]:
    """Paired t-test and Wilcoxon signed-rank test of `other` against `best` on their common seeds
    (Series indexed by seed). NaN where a test is undefined (fewer than 2 pairs, or no differences)."""
    common = best.index.intersection(other.index)
    a, b = best.loc[common].to_numpy(float), other.loc[common].to_numpy(float)
    out = {"n_pairs": int(len(common)), "mean_diff": float((b - a).mean()) if len(common) else float("nan"),
           "t_test_p": float("nan"), "wilcoxon_p": float("nan")}
    if len(common) >= 2 and np.any(a != b):
        out["t_test_p"] = float(stats.ttest_rel(b, a).pvalue)
        try:
            out["wilcoxon_p"] = float(stats.wilcoxon(b, a).pvalue)
        except ValueError:
            pass
    return out


def bootstrap_targets(run_dirs: Sequence[str | Path], n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95, average_over: str = DEFAULT_AVERAGE_OVER) -> tuple[float, float]:
    """Percentile interval of the seed-averaged test macro F1 when the test *targets* are resampled
    with replacement (all crops of a drawn target come along): how much the number would move on
    another draw of test proteins. Macro F1 averages over the classes `average_over` names, as
    the runs' own (`all`: every class with a `score/<class>` column)."""
    tables = [pd.read_csv(Path(d) / "predictions.csv") for d in run_dirs]
    n_classes = max(sum(c.startswith("score/") for c in t.columns) for t in tables)
    n_classes = max(n_classes, max(int(max(t["label"].max(), t["pred"].max())) + 1 for t in tables))
    targets = np.array(sorted(set(tables[0]["target"])))
    rng = np.random.default_rng(seed)
    index = [t.groupby("target").indices for t in tables]
    labels = [t["label"].to_numpy() for t in tables]
    preds = [t["pred"].to_numpy() for t in tables]
    scores = np.empty(n_boot)
    for b in range(n_boot):
        draw = targets[rng.integers(0, len(targets), len(targets))]
        per_run = []
        for idx, y, p in zip(index, labels, preds):
            rows = np.concatenate([idx[t] for t in draw if t in idx])
            per_run.append(macro_f1_score(y[rows], p[rows], n_classes, average_over))
        scores[b] = np.mean(per_run)
    lo, hi = np.percentile(scores, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)
