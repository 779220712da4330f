"""Uncertainty over test proteins: a bootstrap that resamples the test *targets* of each split
(every crop of a drawn target comes along), vectorised, and paired between conditions.

A run is one unit `(split_seed, seed, pretrain_seed)`. Its predictions are reduced once to per-target counts
(true / false positives and negatives per class); a bootstrap draw is a vector of how often each
test target of the split was drawn, so a resampled score is a matrix product followed by a metric
of `xferlab.metrics`. Runs of the same split share the same draws, so the conditions compared are
scored on the same resampled proteins (a paired bootstrap), and runs of different splits get
independent draws. A condition's value in a draw is the mean over its units, as its reported
mean is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from xferlab import metrics

LEVELS = ("crop", "protein")


@dataclass(frozen=True)
class TargetCounts:
    """Per-target counts of one run: `tp`, `fp`, `fn`, `tn` `(T, K)`, `correct` and `n` `(T,)`,
    for the targets `targets` (sorted)."""

    targets: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    tn: np.ndarray
    correct: np.ndarray
    n: np.ndarray

    def aligned(self, order: np.ndarray) -> "TargetCounts":
        """The same counts in the target order `order` (targets this run lacks count zero)."""
        where = {t: i for i, t in enumerate(self.targets)}
        idx = np.array([where.get(t, -1) for t in order])
        def take(a):
            out = np.zeros((len(order), *a.shape[1:]), dtype=a.dtype)
            out[idx >= 0] = a[idx[idx >= 0]]
            return out
        return TargetCounts(order, *(take(a) for a in (self.tp, self.fp, self.fn, self.tn, self.correct, self.n)))

    def resampled(self, weights: np.ndarray, average_over: str) -> metrics.Counts:
        """The counts of every draw: `weights` `(B, T)` -> counts with a leading draw axis."""
        return metrics.Counts(tp=weights @ self.tp, fp=weights @ self.fp, fn=weights @ self.fn, tn=weights @ self.tn,
                              correct=weights @ self.correct, n=weights @ self.n, multilabel=False,
                              average_over=average_over)


def read_predictions(run_dir: str | Path) -> pd.DataFrame:
    return pd.read_csv(Path(run_dir) / "predictions.csv")


def target_counts(table: pd.DataFrame, num_classes: int, level: str = "crop") -> TargetCounts:
    """Per-target counts of a single-label predictions table (`target`, `label`, `pred`, and for
    `level="protein"` the `score/<class>` columns: each target's mean scores give its one
    prediction)."""
    if level not in LEVELS:
        raise ValueError(f"level={level!r}; choose one of {LEVELS}")
    targets, inverse = np.unique(table["target"].to_numpy().astype(str), return_inverse=True)
    labels, pred = table["label"].to_numpy(), table["pred"].to_numpy()
    if level == "protein":
        score_cols = [c for c in table.columns if c.startswith("score/")]
        if not score_cols:
            raise ValueError("predictions.csv has no score/<class> columns: protein-level scores need them")
        _, labels, scores = metrics.per_group(labels, table[score_cols].to_numpy(float), table["target"].to_numpy())
        pred, inverse = scores.argmax(axis=1), np.arange(len(targets))
    truth, guess = np.eye(num_classes, dtype=np.int64)[labels], np.eye(num_classes, dtype=np.int64)[pred]
    per = np.zeros((len(targets), 4, num_classes), dtype=np.int64)
    for j, a in enumerate((truth * guess, (1 - truth) * guess, truth * (1 - guess), (1 - truth) * (1 - guess))):
        np.add.at(per[:, j], inverse, a)
    correct = np.bincount(inverse, weights=(labels == pred), minlength=len(targets)).astype(np.int64)
    n = np.bincount(inverse, minlength=len(targets)).astype(np.int64)
    return TargetCounts(targets, per[:, 0], per[:, 1], per[:, 2], per[:, 3], correct, n)


def draws(n_targets: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """`(n_boot, n_targets)`: how often each target is drawn when `n_targets` are drawn with
    replacement, `n_boot` times."""
    return rng.multinomial(n_targets, np.full(n_targets, 1.0 / n_targets), size=n_boot)


def _column(runs: pd.DataFrame, key: str) -> pd.Series:
    return runs[key].fillna(0).astype(int) if key in runs else pd.Series(0, index=runs.index)


def units(runs: pd.DataFrame) -> pd.Series:
    """Each run's unit `(split_seed, seed, pretrain_seed)`: the pairing key between conditions (a
    backbone without pretraining replicates has pretrain_seed 0)."""
    return pd.Series(list(zip(_column(runs, "split_seed"), runs["seed"].astype(int), _column(runs, "pretrain_seed"))),
                     index=runs.index)


@dataclass
class Condition:
    """One condition's runs: `units` `(split_seed, seed, pretrain_seed)` -> per-target counts, per level."""

    name: str
    counts: dict[str, dict[tuple[int, int, int], TargetCounts]]


def condition_counts(name: str, runs: pd.DataFrame, num_classes: int) -> Condition:
    counts: dict[str, dict] = {level: {} for level in LEVELS}
    for unit, run_dir in zip(units(runs), runs["run_dir"]):
        table = read_predictions(run_dir)
        counts["crop"][unit] = target_counts(table, num_classes, "crop")
        if any(c.startswith("score/") for c in table.columns):  # protein level needs the class scores
            counts["protein"][unit] = target_counts(table, num_classes, "protein")
    if len(counts["protein"]) != len(counts["crop"]):  # older runs without scores: no protein level
        counts["protein"] = {}
    return Condition(name, counts)


class Bootstrap:
    """The draws of every split, made once and shared by every condition of an experiment; the
    conditions' per-target counts are put in each split's target order here, once."""

    def __init__(self, conditions: Sequence[Condition], n_boot: int, seed: int = 0):
        self.n_boot = int(n_boot)
        targets: dict[int, set] = {}
        for c in conditions:
            for (split, *_), tc in c.counts["crop"].items():
                targets.setdefault(split, set()).update(tc.targets.tolist())
        rng = np.random.default_rng(seed)
        self.order = {s: np.array(sorted(t)) for s, t in sorted(targets.items())}
        self.weights = {s: draws(len(t), self.n_boot, rng) for s, t in self.order.items()}
        for c in conditions:
            for per_unit in c.counts.values():
                for unit, tc in per_unit.items():
                    per_unit[unit] = tc.aligned(self.order[unit[0]])

    def values(self, c: Condition, metric: str, level: str, average_over: str,
               units: Sequence[tuple[int, int, int]] | None = None) -> np.ndarray:
        """The metric in every draw, averaged over the condition's units (or `units`): `(B,)`, or
        `(B, K)` for a per-class metric."""
        units = sorted(c.counts[level]) if units is None else list(units)
        per_unit = []
        for unit in units:
            tc = c.counts[level][unit]
            per_unit.append(metrics.METRICS[metric].compute(tc.resampled(self.weights[unit[0]], average_over)))
        return np.mean(per_unit, axis=0)


def interval(values: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return lo, hi


def bootstrap_p(diff: np.ndarray) -> float:
    """Two-sided bootstrap p-value of a difference being 0: twice the smaller share of draws on
    either side of 0 (counted with the observed sample, so never 0)."""
    below, above = (diff <= 0).sum(), (diff >= 0).sum()
    return float(min(1.0, 2 * (min(below, above) + 1) / (len(diff) + 1)))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down; monotone; capped at 1)."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def verdict(a: str, b: str, diff: float, lo: float, hi: float, p: float, alpha: float = 0.05) -> str:
    """One line a reader can quote: which is higher, by how much, and how sure."""
    numbers = f"{diff:+.4f} [{lo:+.4f}, {hi:+.4f}], Holm p = {p:.3g}"
    if p < alpha and (lo > 0 or hi < 0):
        return f"{a} > {b}: {numbers}" if diff > 0 else f"{b} > {a}: {-diff:+.4f} [{-hi:+.4f}, {-lo:+.4f}], Holm p = {p:.3g}"
    return f"{a} vs {b}: not separable ({numbers})"
