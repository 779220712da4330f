"""Macro F1, per-class F1 and accuracy for a grid of `G` heads at once, from counts accumulated
over batches. The definitions are those of torchmetrics (and scikit-learn):

- single-label: a sample's prediction is its highest score; macro F1 averages the per-class F1
  over the classes that occur in the targets or the predictions; accuracy is the fraction correct.
- multilabel: a class is predicted when its score exceeds `THRESHOLD`; macro F1 averages the
  per-class F1 over all classes (0 for a class never present nor predicted); accuracy is the
  fraction of samples whose whole label set is right (exact match).
"""

from __future__ import annotations

import torch

THRESHOLD = 0.5  # multilabel decision threshold


class GridCounts:
    """True positives, false positives and false negatives per head and class `(G, K)`, and
    correct samples per head `(G,)`, accumulated with `update(scores, targets)`."""

    def __init__(self, n_heads: int, num_classes: int, multilabel: bool, device=None):
        self.multilabel, self.k = multilabel, num_classes
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
        """`(G,)`"""
        f1 = self.f1_per_class()
        if self.multilabel:
            return f1.mean(dim=1)
        present = (self.tp + self.fp + self.fn) > 0
        return (f1 * present).sum(dim=1) / present.sum(dim=1).clamp_min(1)

    def accuracy(self) -> torch.Tensor:
        """`(G,)`"""
        return self.correct.double() / max(self.n, 1)


def _one_hot(index: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(index, k).bool()
