"""Every score xferlab reports, computed in one place from labels + class scores + label rule +
averaging. Heads, the job, the report and the tests all call this module.

- single-label: labels are class indices `(N,)`; a sample's prediction is its highest score.
- multilabel: labels are rows `(N, K)` of multi-hot values or grade weights (the `graded` rule); a
  class is present when its weight is at least `POSITIVE` (grade >= 2) and predicted when its
  score exceeds `THRESHOLD` (or a per-class threshold chosen on validation: `tuned`); accuracy is
  the fraction of samples whose whole label set is right (exact match). Threshold-free: macro and
  micro mean average precision and macro AUROC over the classes with a positive and a negative.

Macro F1 (and per-class F1 averages) run over the classes `metrics.average_over` names (balanced
accuracy always averages recall over the classes with a labelled sample, where recall is defined):
- `present` (default): the classes that occur in the labels or the predictions of the split
  scored. A class with no sample there that is never predicted is left out; one that is
  predicted counts with score 0. This is scikit-learn's `f1_score(average="macro")` and
  torchmetrics' multiclass macro F1.
- `all`: every class of the store; a class with no sample that is never predicted counts with
  score 0 (scikit-learn with `labels=range(K)`, `zero_division=0`). Comparable across splits with
  the same denominator, but a class missing from a small test split lowers the score.

Adding a metric: write `def name(c: Counts) -> float` (or a per-class array) and decorate it with
`@metric("name")` (`@metric("name", per_class=True)` for one value per class, written as
`<split>/<name>/<class>`); a threshold-free multilabel metric takes `(truth, scores)` and is
registered with `@score_metric("name")`. `score` then computes it for every head, the report
shows it (runs that predate it show it as missing) and W&B receives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

THRESHOLD = 0.5  # multilabel decision threshold
POSITIVE = 0.5  # multilabel: a class is present at this weight or more (graded: grade >= 2)
AVERAGE_OVER = ("present", "all")
DEFAULT_AVERAGE_OVER = "present"


def check_average_over(value: str) -> str:
    if value not in AVERAGE_OVER:
        raise ValueError(f"metrics.average_over={value!r}; choose one of {AVERAGE_OVER} (classes present in the "
                         "test labels or predictions, or every class of the store)")
    return value


@dataclass(frozen=True)
class Counts:
    """Per-class true positives, false positives, false negatives and true negatives `(..., K)`,
    and correct samples `(...,)` out of `n`, for one or more heads (leading dimensions)."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    tn: np.ndarray
    correct: np.ndarray
    n: int
    multilabel: bool
    average_over: str = DEFAULT_AVERAGE_OVER

    def classes_averaged(self) -> np.ndarray:
        """Boolean mask `(..., K)` of the classes a macro average runs over."""
        if self.average_over == "all":
            return np.ones(self.tp.shape, dtype=bool)
        return (self.tp + self.fp + self.fn) > 0

    def macro(self, per_class: np.ndarray) -> np.ndarray:
        """Mean of a per-class score over the classes `average_over` names."""
        mask = self.classes_averaged()
        return (per_class * mask).sum(axis=-1) / np.maximum(mask.sum(axis=-1), 1)


def predicted(scores: np.ndarray, multilabel: bool, thresholds: np.ndarray | None = None) -> np.ndarray:
    """Class indices `(N,)` (single-label: the highest score) or a boolean `(N, K)` (multilabel:
    scores above `THRESHOLD`, or above each class's own threshold)."""
    scores = np.asarray(scores)
    if not multilabel:
        return scores.argmax(axis=-1)
    return scores > (THRESHOLD if thresholds is None else np.asarray(thresholds))


def counts(labels: np.ndarray, scores: np.ndarray, *, multilabel: bool,
           average_over: str = DEFAULT_AVERAGE_OVER, thresholds: np.ndarray | None = None) -> Counts:
    """The counts of one head's scores `(N, K)` against `labels`."""
    scores = np.asarray(scores)
    k = scores.shape[-1]
    pred = predicted(scores, multilabel, thresholds)
    if multilabel:
        truth = np.asarray(labels) >= POSITIVE
        correct = int((pred == truth).all(axis=1).sum())
    else:
        truth = np.eye(k, dtype=bool)[np.asarray(labels)]
        correct = int((pred == np.asarray(labels)).sum())
        pred = np.eye(k, dtype=bool)[pred]
    return Counts(tp=(pred & truth).sum(axis=0), fp=(pred & ~truth).sum(axis=0), fn=(~pred & truth).sum(axis=0),
                  tn=(~pred & ~truth).sum(axis=0), correct=np.asarray(correct), n=len(scores),
                  multilabel=multilabel, average_over=check_average_over(average_over))


# -- the metrics --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    name: str
    compute: Callable[[Counts], np.ndarray]
    per_class: bool = False


METRICS: dict[str, Metric] = {}


def metric(name: str, per_class: bool = False):
    """Register `fn(counts) -> value` as the metric `name` (see the module docstring)."""
    def register(fn: Callable[[Counts], np.ndarray]) -> Callable[[Counts], np.ndarray]:
        if name in METRICS:
            raise ValueError(f"metric {name!r} is registered twice")
        METRICS[name] = Metric(name, fn, per_class)
        return fn
    return register


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.where(den > 0, num / np.maximum(den, 1), 0.0)


@metric("f1", per_class=True)
def f1_per_class(c: Counts) -> np.ndarray:
    """F1 per class; 0 where a class has no true positive (including classes never seen)."""
    return _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn)


@metric("macro_f1")
def macro_f1(c: Counts) -> np.ndarray:
    return c.macro(f1_per_class(c))


@metric("accuracy")
def accuracy(c: Counts) -> np.ndarray:
    """Single-label: fraction correct. Multilabel: exact-set match."""
    return np.asarray(c.correct, dtype=np.float64) / np.maximum(c.n, 1)


@metric("balanced_accuracy")
def balanced_accuracy(c: Counts) -> np.ndarray:
    """The mean recall over the classes with at least one labelled sample (recall is undefined
    for the others, whatever `average_over` says): scikit-learn's `balanced_accuracy_score`.
    Multilabel: the mean over those classes of (sensitivity + specificity) / 2."""
    recall = _ratio(c.tp, c.tp + c.fn)
    if c.multilabel:
        recall = (recall + _ratio(c.tn, c.tn + c.fp)) / 2
    labelled = (c.tp + c.fn) > 0
    return (recall * labelled).sum(axis=-1) / np.maximum(labelled.sum(axis=-1), 1)


PROTEIN = "protein_"  # prefix of the protein-level metrics (one prediction per target)


def per_group(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One row per group (target): its mean class scores and its label (the label of its first
    row; a grouped split keeps a target's rows together and they share a label). Returns
    (group names, labels, scores), groups sorted by name."""
    names, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    sums = np.zeros((len(names), scores.shape[1]))
    np.add.at(sums, inverse, scores)
    first = np.full(len(names), -1)
    first[inverse[::-1]] = np.arange(len(inverse))[::-1]
    return names, np.asarray(labels)[first], sums / np.bincount(inverse)[:, None]


# -- threshold-free multilabel metrics ----------------------------------------------------------
SCORE_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {}


def score_metric(name: str):
    """Register `fn(truth (N, K) bool, scores (N, K)) -> value`, computed for multilabel heads."""
    def register(fn):
        if name in SCORE_METRICS or name in METRICS:
            raise ValueError(f"metric {name!r} is registered twice")
        SCORE_METRICS[name] = fn
        return fn
    return register


def _ranked(truth: np.ndarray) -> np.ndarray:
    """The classes with at least one positive and one negative: where ranking metrics are defined."""
    return (truth.sum(axis=0) > 0) & (truth.sum(axis=0) < len(truth))


@score_metric("macro_map")
def macro_map(truth: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    keep = _ranked(truth)
    return float(average_precision_score(truth[:, keep], scores[:, keep], average="macro")) if keep.any() else np.nan


@score_metric("micro_map")
def micro_map(truth: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    keep = _ranked(truth)
    return float(average_precision_score(truth[:, keep], scores[:, keep], average="micro")) if keep.any() else np.nan


@score_metric("macro_auroc")
def macro_auroc(truth: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    keep = _ranked(truth)
    return float(roc_auc_score(truth[:, keep], scores[:, keep], average="macro")) if keep.any() else np.nan


def tuned_thresholds(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per class, the threshold (one of the class's scores, or 1 when it has no positive) that
    maximises that class's F1 on these rows: chosen on validation, applied on test."""
    truth = np.asarray(labels) >= POSITIVE
    out = np.ones(scores.shape[1])
    for k in range(scores.shape[1]):
        if not truth[:, k].any():
            continue
        order = np.argsort(-scores[:, k], kind="stable")
        hits = np.cumsum(truth[order, k])
        f1 = 2 * hits / (np.arange(1, len(order) + 1) + truth[:, k].sum())  # predicting the top i+1 as positive
        best = int(np.argmax(f1))
        below = scores[order[best + 1], k] if best + 1 < len(order) else 0.0
        out[k] = (scores[order[best], k] + below) / 2  # between the last positive kept and the next score
    return out


def counted(c: Counts, classes: list[str], prefix: str) -> dict[str, float]:
    """Every counts metric of `c`, as `{prefix + name: value}` (per class: `prefix + name/<class>`)."""
    out: dict[str, float] = {}
    for m in METRICS.values():
        value = m.compute(c)
        if m.per_class:
            out.update({f"{prefix}{m.name}/{name}": float(v) for name, v in zip(classes, value)})
        else:
            out[f"{prefix}{m.name}"] = float(value)
    return out


def score(labels: np.ndarray, scores: np.ndarray, *, classes: list[str], multilabel: bool,
          average_over: str = DEFAULT_AVERAGE_OVER, prefix: str = "test/",
          groups: np.ndarray | None = None, thresholds: np.ndarray | None = None) -> dict[str, float]:
    """Every registered metric of one head's `scores` `(N, K)` against `labels`, as
    `{prefix + name: value}` (per-class metrics as `prefix + name/<class>`; multilabel adds the
    threshold-free metrics). With `groups` (each row's target), the same metrics once more per
    protein, as `prefix + protein_<name>`: each target's crop scores averaged into one prediction
    (as OpenCell and cytoself evaluate). With `thresholds` (multilabel), per-class thresholds
    replace `THRESHOLD`."""
    out = counted(counts(labels, scores, multilabel=multilabel, average_over=average_over, thresholds=thresholds),
                  classes, prefix)
    if multilabel:
        truth = np.asarray(labels) >= POSITIVE
        out.update({f"{prefix}{name}": fn(truth, np.asarray(scores)) for name, fn in SCORE_METRICS.items()})
    if groups is not None:
        _, group_labels, group_scores = per_group(labels, scores, groups)
        out.update(score(group_labels, group_scores, classes=classes, multilabel=multilabel,
                         average_over=average_over, prefix=prefix + PROTEIN, thresholds=thresholds))
    return out


TUNED = "tuned_"  # prefix of the multilabel metrics at per-class thresholds chosen on validation


def tuned(labels: np.ndarray, scores: np.ndarray, val_labels: np.ndarray, val_scores: np.ndarray, *,
          classes: list[str], average_over: str = DEFAULT_AVERAGE_OVER, prefix: str = "test/") -> dict[str, float]:
    """Multilabel: the thresholded metrics at per-class thresholds chosen on the validation rows
    (`prefix + tuned_<name>`), and the thresholds (`head/threshold/<class>`)."""
    thresholds = tuned_thresholds(val_labels, val_scores)
    c = counts(labels, scores, multilabel=True, average_over=average_over, thresholds=thresholds)
    return {**{f"head/threshold/{name}": float(t) for name, t in zip(classes, thresholds)},
            **counted(c, classes, prefix + TUNED)}


def reported(prefix: str = "test/") -> list[str]:
    """The names of the single-number metrics, in registration order, per crop then per protein,
    then the multilabel macro F1 at thresholds chosen on validation (what the report tables show;
    a metric a run lacks is shown as missing)."""
    names = [m.name for m in METRICS.values() if not m.per_class] + list(SCORE_METRICS)
    return ([f"{prefix}{n}" for n in names] + [f"{prefix}{PROTEIN}{n}" for n in names]
            + [f"{prefix}{TUNED}macro_f1"])


def macro_f1_score(labels: np.ndarray, pred: np.ndarray, num_classes: int,
                   average_over: str = DEFAULT_AVERAGE_OVER) -> float:
    """Single-label macro F1 of predicted class indices (for resampling, where no scores are kept)."""
    scores = np.eye(num_classes)[np.asarray(pred)]
    return float(macro_f1(counts(labels, scores, multilabel=False, average_over=average_over)))


class GridCounts:
    """The counts of `G` heads at once, accumulated over batches on the heads' device with
    `update(scores (G, B, K), targets)`; `counts()` hands them to the metrics above."""

    def __init__(self, n_heads: int, num_classes: int, multilabel: bool, device=None,
                 average_over: str = DEFAULT_AVERAGE_OVER):
        self.multilabel, self.k = multilabel, num_classes
        self.average_over = check_average_over(average_over)
        self.tp = torch.zeros(n_heads, num_classes, dtype=torch.long, device=device)
        self.fp = torch.zeros_like(self.tp)
        self.fn = torch.zeros_like(self.tp)
        self.tn = torch.zeros_like(self.tp)
        self.correct = torch.zeros(n_heads, dtype=torch.long, device=device)
        self.n = 0

    @torch.no_grad()
    def update(self, scores: torch.Tensor, targets: torch.Tensor) -> None:
        """`scores` `(G, B, K)` (probabilities); `targets` `(B,)` class indices or `(B, K)` multi-hot."""
        if self.multilabel:
            pred = scores > THRESHOLD
            truth = (targets >= POSITIVE)[None]
            self.correct += (pred == truth).all(dim=2).sum(dim=1)
        else:
            pred = torch.nn.functional.one_hot(scores.argmax(dim=2), self.k).bool()  # (G, B, K)
            truth = torch.nn.functional.one_hot(targets, self.k).bool()[None]
            self.correct += (pred & truth).sum(dim=(1, 2))
        self.tp += (pred & truth).sum(dim=1)
        self.fp += (pred & ~truth).sum(dim=1)
        self.fn += (~pred & truth).sum(dim=1)
        self.tn += (~pred & ~truth).sum(dim=1)
        self.n += targets.shape[0]

    def counts(self) -> Counts:
        cpu = [t.cpu().numpy() for t in (self.tp, self.fp, self.fn, self.tn, self.correct)]
        return Counts(*cpu, n=self.n, multilabel=self.multilabel, average_over=self.average_over)
