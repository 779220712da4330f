"""Uncertainty over test proteins: a bootstrap that resamples the test *targets* of each split
(every crop of a drawn target comes along) within their class, vectorised, and paired between
conditions.

A run is one unit `(split_seed, seed, pretrain_seed)`. Its predictions are reduced once to per-target counts
(true / false positives and negatives per class); a bootstrap draw is a vector of weights, one per
test target of the split, so a resampled score is a matrix product followed by a metric of
`xferlab.metrics`. Runs of the same split share the same draws, so the conditions compared are
scored on the same resampled proteins (a paired bootstrap), and runs of different splits get
independent draws. A condition's value in a draw is the mean over its units, as its reported
mean is.

Why within classes: a split's test set holds a fixed number of proteins per class (the split is
stratified), and macro F1 weighs every class alike. Drawing test proteins regardless of class
leaves rare classes out of some draws and doubles them in others (a class left out but still
predicted scores F1 0), so the draws sat 0.01-0.02 below the estimate and the intervals were not
centred on it (issue 24). Drawing within each class keeps every class's count, as the design does.

Which draw (`resampling`, chosen by the calibration simulation, `reporting.calibration`):
- `rao_wu_centred` (the report's): Rao-Wu draws (below) for the spread, moved so that their mean
  is the mean of plain within-class draws (`stratified`, made alongside from the same generator).
  Macro F1 of `n - 1` drawn proteins is biased lower than that of the `n` the estimate has, so
  Rao-Wu draws sit further below the estimate than the estimate sits below the truth; plain draws
  of `n` show the estimate's own bias (the calibration: -0.0089 against a bias of -0.0087 per
  protein, Rao-Wu -0.0135). The BCa interval reads its bias correction from where the draws sit.
- `rao_wu`: the rescaled bootstrap of Rao and Wu (1988). In a class with `n`
  test proteins, `n - 1` are drawn with replacement and each draw weighs `n / (n - 1)`, so the
  class keeps its total weight `n`. The plain within-class bootstrap (`stratified`) draws `n` and
  shrinks each class's variance by `(n - 1) / n`: a third for the 3-protein classes, which weigh as
  much as the others in macro F1. Rao-Wu removes that shrinkage (exactly, for a mean).
- `stratified`: `n` drawn with replacement within each class (weights are whole numbers).
- `unstratified`: `n_targets` drawn from the whole split regardless of class: the report's
  earlier draw, kept to measure against.
A class with a single test protein in a split keeps it, with weight 1, in every draw: a class of
one cannot show how much another protein of it would differ, so it adds no variance (the
jackknife gives it no influence either), and the intervals leave that variance out. The report
names such classes (`Bootstrap.single_protein_classes`); the demo's smallest have 3 per split.

A target's class is its true label (in `TargetCounts`, the class of its crops' true labels: the
argmax of `tp + fn`). Every condition is scored on the same targets of a split with the same
labels; the bootstrap checks that and stops otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from xferlab import metrics
from xferlab.reporting.intervals import Replicates, bootstrap_p, interval  # noqa: F401  (the report's API)

LEVELS = ("crop", "protein")
RESAMPLING = ("rao_wu_centred", "rao_wu", "stratified", "unstratified")


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
        if np.array_equal(self.targets, order):
            return self
        where = {t: i for i, t in enumerate(self.targets)}
        idx = np.array([where.get(t, -1) for t in order])
        def take(a):
            out = np.zeros((len(order), *a.shape[1:]), dtype=a.dtype)
            out[idx >= 0] = a[idx[idx >= 0]]
            return out
        return TargetCounts(order, *(take(a) for a in (self.tp, self.fp, self.fn, self.tn, self.correct, self.n)))

    def classes(self) -> np.ndarray:
        """Each target's class (its crops' true label: the argmax of `tp + fn`); -1 for a target
        without crops here."""
        truth = self.tp + self.fn
        return np.where(truth.sum(axis=1) > 0, truth.argmax(axis=1), -1)

    def matrix(self) -> np.ndarray:
        """`(T, 4K + 2)` float64: `tp | fp | fn | tn | correct | n`, for one matrix product per
        draw set (float, because numpy multiplies integer matrices without BLAS, slowly)."""
        return np.concatenate([self.tp, self.fp, self.fn, self.tn, self.correct[:, None], self.n[:, None]],
                              axis=1).astype(np.float64)

    def resampled(self, weights: np.ndarray, average_over: str) -> metrics.Counts:
        """The counts of every draw: `weights` `(B, T)` -> counts with a leading draw axis."""
        return from_matrix(np.asarray(weights, dtype=np.float64) @ self.matrix(), self.tp.shape[1], average_over)


def from_matrix(m: np.ndarray, num_classes: int, average_over: str) -> metrics.Counts:
    """`metrics.Counts` from `(..., 4K + 2)` stacked counts (`TargetCounts.matrix`)."""
    k = num_classes
    return metrics.Counts(tp=m[..., :k], fp=m[..., k:2 * k], fn=m[..., 2 * k:3 * k], tn=m[..., 3 * k:4 * k],
                          correct=m[..., 4 * k], n=m[..., 4 * k + 1], multilabel=False, average_over=average_over)


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
    return counts_per_target(targets, inverse, labels, pred, num_classes)


def counts_per_target(targets: np.ndarray, inverse: np.ndarray, labels: np.ndarray, pred: np.ndarray,
                      num_classes: int) -> TargetCounts:
    """The counts of predictions `pred` against `labels` (class indices), row `i` belonging to
    target `targets[inverse[i]]`. Each row adds to one class's tp (right) or to its label's fn and
    its prediction's fp (wrong); every other class counts it as a true negative."""
    t, k = len(targets), num_classes
    inverse, labels, pred = (np.asarray(a, dtype=np.int64) for a in (inverse, labels, pred))
    right = labels == pred
    def per(cls, weights):
        return np.bincount(inverse * k + cls, weights=weights, minlength=t * k).reshape(t, k).astype(np.int64)
    tp, fn, fp = per(labels, right), per(labels, ~right), per(pred, ~right)
    n = np.bincount(inverse, minlength=t).astype(np.int64)
    correct = np.bincount(inverse, weights=right, minlength=t).astype(np.int64)
    return TargetCounts(np.asarray(targets), tp, fp, fn, n[:, None] - tp - fp - fn, correct, n)


def draws(n_targets: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """`(n_boot, n_targets)`: how often each target is drawn when `n_targets` are drawn with
    replacement regardless of class, `n_boot` times (`resampling="unstratified"`)."""
    return rng.multinomial(n_targets, np.full(n_targets, 1.0 / n_targets), size=n_boot).astype(np.float64)


def stratified_draws(classes: np.ndarray, n_boot: int, rng: np.random.Generator, rescale: bool = True) -> np.ndarray:
    """`(n_boot, len(classes))` weights: the targets of each class drawn with replacement among
    themselves, so every class keeps its total weight (its number of test targets). `rescale`:
    Rao-Wu, `n - 1` draws of weight `n / (n - 1)` per class of `n`; otherwise `n` draws of weight 1.
    A class with one target keeps it with weight 1 in every draw (module docstring)."""
    classes = np.asarray(classes)
    t = len(classes)
    members, draws_of, scale = [], [], np.ones(t)
    for k in np.unique(classes):
        where = np.flatnonzero(classes == k)
        n = len(where)
        if n < 2:
            continue
        m = n - 1 if rescale else n
        members.append(where)
        draws_of.append(np.full(m, n))
        scale[where] = n / m
    if not members:
        return np.ones((n_boot, t))
    n_of = np.concatenate(draws_of)  # per draw slot, the size of its class
    start = np.repeat(np.cumsum([0] + [len(w) for w in members[:-1]]), [len(d) for d in draws_of])
    picked = np.concatenate(members)[start + (rng.random((n_boot, len(n_of))) * n_of).astype(np.int64)]
    counts = np.bincount((np.arange(n_boot)[:, None] * t + picked).ravel(), minlength=n_boot * t).reshape(n_boot, t)
    out = counts * scale
    single = np.ones(t, dtype=bool)
    single[np.concatenate(members)] = False
    out[:, single] = 1.0
    return out


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
    conditions' per-target counts are put in each split's target order here, once.
    `resampling`: one of `RESAMPLING` (module docstring); `seed` fixes the draws."""

    def __init__(self, conditions: Sequence[Condition], n_boot: int, seed: int = 0, resampling: str = "rao_wu_centred"):
        if resampling not in RESAMPLING:
            raise ValueError(f"resampling={resampling!r}; choose one of {RESAMPLING}")
        self.n_boot, self.resampling = int(n_boot), resampling
        self.classes = split_classes(conditions)
        rng = np.random.default_rng(seed)
        self.order = {s: np.array(sorted(t)) for s, t in sorted(self.classes.items())}
        self.classes = {s: np.array([self.classes[s][t] for t in order]) for s, order in self.order.items()}
        self.weights = {s: (draws(len(self.order[s]), self.n_boot, rng) if resampling == "unstratified" else
                            stratified_draws(self.classes[s], self.n_boot, rng, rescale=resampling != "stratified"))
                        for s in self.order}
        # where the draws are centred: the plain within-class draws' mean (`rao_wu_centred` only)
        self.centring = ({s: stratified_draws(self.classes[s], self.n_boot, rng, rescale=False) for s in self.order}
                         if resampling == "rao_wu_centred" else None)
        for c in conditions:
            for per_unit in c.counts.values():
                for unit, tc in per_unit.items():
                    per_unit[unit] = tc.aligned(self.order[unit[0]])

    def single_protein_classes(self) -> dict[int, list[int]]:
        """Each class with a single test target in some split: `{class: [split seeds]}`. Such a
        class stays fixed in every draw and adds no variance (module docstring)."""
        out: dict[int, list[int]] = {}
        for s, classes in self.classes.items():
            values, counts = np.unique(classes, return_counts=True)
            for k in values[counts == 1].tolist():
                out.setdefault(int(k), []).append(int(s))
        return out

    def values(self, c: Condition, metric: str, level: str, average_over: str,
               units: Sequence[tuple[int, int, int]] | None = None) -> np.ndarray:
        """The metric in every draw, averaged over the condition's units (or `units`): `(B,)`, or
        `(B, K)` for a per-class metric."""
        return self.replicates(c, metric, level, average_over, units).draws

    def replicates(self, c: Condition, metric: str, level: str, average_over: str,
                   units: Sequence[tuple[int, int, int]] | None = None) -> Replicates:
        """The metric averaged over the condition's units (or `units`): its point estimate, its
        value in every draw and each test protein's influence (a stratified jackknife: one protein
        of one split left out of every unit of that split at a time)."""
        units = sorted(c.counts[level]) if units is None else list(units)
        compute = metrics.METRICS[metric].compute
        by_split: dict[int, list] = {}
        for unit in units:
            by_split.setdefault(unit[0], []).append(unit)
        point, drawn, centre, influence = 0.0, 0.0, 0.0, []
        for split, order in self.order.items():
            if split not in by_split:
                influence.append(None)
                continue
            stacked = np.stack([c.counts[level][u].matrix() for u in by_split[split]], axis=1)  # (T, U, D)
            t, u, d = stacked.shape
            k = (d - 2) // 4
            full = stacked.sum(axis=0)
            value = compute(from_matrix(full, k, average_over))  # (U,) or (U, K)
            resampled = (self.weights[split] @ stacked.reshape(t, u * d)).reshape(self.n_boot, u, d)
            drawn = drawn + compute(from_matrix(resampled, k, average_over)).sum(axis=1)
            if self.centring is not None:
                plain = (self.centring[split] @ stacked.reshape(t, u * d)).reshape(self.n_boot, u, d)
                centre = centre + compute(from_matrix(plain, k, average_over)).sum(axis=1).mean(axis=0)
            point = point + value.sum(axis=0)
            left_out = compute(from_matrix(full[None] - stacked, k, average_over))  # (T, U, ...)
            influence.append(self._influence(split, (left_out - value[None]).sum(axis=1) / len(units)))
        shape = np.shape(point)
        influence = [np.zeros((len(self.order[s]), *shape)) if v is None else v
                     for s, v in zip(self.order, influence)]
        drawn = np.asarray(drawn) / len(units)
        if self.centring is not None:
            drawn = drawn - drawn.mean(axis=0) + np.asarray(centre) / len(units)
        return Replicates(np.asarray(point) / len(units), drawn, np.concatenate(influence))

    def _influence(self, split: int, change: np.ndarray) -> np.ndarray:
        """Influence of each test protein of `split` from `change` (`(T, ...)`, what leaving it out
        does to the quantity): centred within its class, scaled by `(n - 1) / n` for a class of
        `n` (the jackknife's leave-one-out step is `1 / (n - 1)` of the class, a bootstrap draw's
        `1 / n`), so that classes of different sizes weigh as they do in the draws; 0 for a class
        of one."""
        out = np.zeros_like(change)
        classes = self.classes[split]
        for k in np.unique(classes):
            where = classes == k
            n = where.sum()
            if n > 1:
                out[where] = (n - 1) / n * (change[where].mean(axis=0) - change[where])
        return out


def split_classes(conditions: Sequence[Condition]) -> dict[int, dict[str, int]]:
    """Per split, each test target's class, from every unit of every condition (crop counts);
    an error naming the target when two runs disagree."""
    classes: dict[int, dict[str, int]] = {}
    seen: dict[tuple[int, str], str] = {}
    checked: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # per split, the targets and classes of a unit seen
    for c in conditions:
        for unit, tc in c.counts["crop"].items():
            split = classes.setdefault(unit[0], {})
            same = checked.get(unit[0])
            if same is not None and np.array_equal(same[0], tc.targets) and np.array_equal(same[1], tc.classes()):
                continue  # the same targets with the same classes as a unit already taken in
            checked.setdefault(unit[0], (tc.targets, tc.classes()))
            for target, k in zip(tc.targets.tolist(), tc.classes().tolist()):
                if k < 0:
                    continue
                where = f"condition {c.name!r}, unit (split_seed, seed, pretrain_seed) = {unit}"
                if split.setdefault(target, k) != k:
                    raise ValueError(
                        f"test target {target!r} of split_seed {unit[0]} has class {split[target]} in "
                        f"{seen[unit[0], target]} but class {k} in {where}: the conditions were not scored on the "
                        "same test labels (a different store or label table?), so they cannot share bootstrap "
                        "draws within classes; report them separately or rerun them on the same store")
                seen.setdefault((unit[0], target), where)
    return classes


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
