"""Vectorised grid scores agree with torchmetrics and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score
from torchmetrics.classification import MulticlassF1Score, MultilabelExactMatch, MultilabelF1Score

from xferlab.heads.scores import GridCounts


def test_multiclass_counts_match_torchmetrics_and_sklearn_with_an_absent_class():
    torch.manual_seed(0)
    scores = torch.rand(3, 50, 5).softmax(dim=-1)
    targets = torch.randint(0, 4, (50,))  # class 4 never occurs (it may still be predicted)
    counts = GridCounts(3, 5, multilabel=False)
    counts.update(scores[:, :20], targets[:20])
    counts.update(scores[:, 20:], targets[20:])
    for g in range(3):
        pred = scores[g].argmax(dim=1)
        expected = MulticlassF1Score(5, average="macro")(scores[g], targets).item()
        assert counts.macro_f1()[g].item() == pytest.approx(expected, abs=1e-6)
        assert counts.macro_f1()[g].item() == pytest.approx(f1_score(targets, pred, average="macro"), abs=1e-9)
        assert counts.accuracy()[g].item() == pytest.approx(accuracy_score(targets, pred))
        np.testing.assert_allclose(counts.f1_per_class()[g].numpy(),
                                   MulticlassF1Score(5, average="none")(scores[g], targets).numpy(), atol=1e-6)


def test_multilabel_counts_match_torchmetrics_and_sklearn():
    torch.manual_seed(1)
    scores = torch.rand(2, 40, 4)
    targets = (torch.rand(40, 4) > 0.6).long()
    targets[:, 3] = 0  # a class nobody has
    counts = GridCounts(2, 4, multilabel=True)
    counts.update(scores, targets)
    for g in range(2):
        pred = (scores[g] > 0.5).numpy()
        expected = MultilabelF1Score(4, threshold=0.5, average="macro")(scores[g], targets).item()
        assert counts.macro_f1()[g].item() == pytest.approx(expected, abs=1e-6)
        assert counts.macro_f1()[g].item() == pytest.approx(
            f1_score(targets.numpy(), pred, average="macro", zero_division=0), abs=1e-9)
        exact = MultilabelExactMatch(4, threshold=0.5)(scores[g], targets).item()
        assert counts.accuracy()[g].item() == pytest.approx(exact, abs=1e-6)
