"""Macro F1, per-class F1 and accuracy for a grid of `G` heads at once, from counts accumulated
over batches, and the same macro F1 from label arrays (kNN, the report's bootstrap).

- single-label: a sample's prediction is its highest score; accuracy is the fraction correct.
- multilabel: a class is predicted when its score exceeds `THRESHOLD`; accuracy is the fraction
  of samples whose whole label set is right (exact match).

Macro F1 is the mean of the per-class F1 over the classes `metrics.average_over` names:
- `present` (default): the classes that occur in the targets or the predictions of the split
  scored. A class with no sample there that is never predicted is left out; one that is
  predicted counts with F1 0. This is scikit-learn's `f1_score(average="macro")` and
  torchmetrics' multiclass macro F1.
- `all`: every class of the store; a class with no sample that is never predicted counts with
  F1 0 (scikit-learn with `labels=range(K)`, `zero_division=0`; torchmetrics' multilabel macro
  F1). Comparable across splits with the same denominator, but a class missing from a small
  test split lowers the score.
"""

from __future__ import annotations

import numpy as np
import torch

THRESHOLD = 0.5  # multilabel decision threshold
AVERAGE_OVER = ("present", "all")
DEFAULT_AVERAGE_OVER = "present"


def check_average_over(value: str) -> str:
    if value not in AVERAGE_OVER:
        raise ValueError(f"metrics.average_over={value!r}; choose one of {AVERAGE_OVER} (classes present in the "
                         "test labels or predictions, or every class of the store)")
    return value


def macro_f1_score(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int,
                   average_over: str = DEFAULT_AVERAGE_OVER) -> float:
    """Single-label macro F1 of class indices, averaged over the classes `average_over` names."""
    from sklearn.metrics import f1_score

    labels = range(num_classes) if check_average_over(average_over) == "all" else None
    return float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))


class GridCounts:
    """True positives, false positives and false negatives per head and class `(G, K)`, and
    correct samples per head `(G,)`, accumulated with `update(scores, targets)`."""

    def __init__(self, n_heads: int, num_classes: int, multilabel: bool, device=None,
                 average_over: str = DEFAULT_AVERAGE_OVER):
        self.multilabel, self.k = multilabel, num_classes
        self.average_over = check_average_over(average_over)
        self.tp = torch.zeros(n_heads, num_classes, dtype=torch.long, device=device)
        self.fp = torch.zeros_like(self.tp)
        self.fn = torch.zeros_like(self.tp)
        self.correct = torch.zeros(n_heads, dtype=torch.long, device=device)
        self.n = 0

    @torch.no_grad()
    def update(self, scores: torch.Tensor, targets: torch.Tensor) -> None:
        """`scores` `(G, B, K)` (probabilities); `targets` `(B,)` class indices or `(B, K)` multi-hot."""
        if self.multilabel:
            pred = scores > THRESHOLD
            truth = targets.bool()[None]
            self.tp += (pred & truth).sum(dim=1)
            self.fp += (pred & ~truth).sum(dim=1)
            self.fn += (~pred & truth).sum(dim=1)
            self.correct += (pred == truth).all(dim=2).sum(dim=1)
        else:
            pred = _one_hot(scores.argmax(dim=2), self.k)  # (G, B, K)
            truth = _one_hot(targets, self.k)[None]
            tp = (pred & truth).sum(dim=1)
            self.tp += tp
            self.fp += pred.sum(dim=1) - tp
            self.fn += truth.sum(dim=1) - tp
            self.correct += tp.sum(dim=1)
        self.n += targets.shape[0]

    def f1_per_class(self) -> torch.Tensor:
        """`(G, K)`; 0 where a class has no true positive (including classes never seen)."""
        tp = self.tp.double()
        denominator = 2 * tp + self.fp + self.fn
        return torch.where(denominator > 0, 2 * tp / denominator.clamp_min(1), 0.0)

    def macro_f1(self) -> torch.Tensor:
        """`(G,)`, over the classes `average_over` names (see the module docstring)."""
        f1 = self.f1_per_class()
        if self.average_over == "all":
            return f1.mean(dim=1)
        present = (self.tp + self.fp + self.fn) > 0
        return (f1 * present).sum(dim=1) / present.sum(dim=1).clamp_min(1)

    def accuracy(self) -> torch.Tensor:
        """`(G,)`"""
        return self.correct.double() / max(self.n, 1)


def _one_hot(index: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(index, k).bool()
