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


def test_macro_f1_over_present_or_all_classes():
    """`present` (default): classes with a target or a prediction, as scikit-learn's default;
    `all`: every class, one never seen nor predicted scoring 0 (scikit-learn with labels=range(K))."""
    from xferlab.heads.scores import macro_f1_score

    targets = torch.tensor([0, 0, 1, 1, 2, 2])          # class 3 of 4 is absent from this split...
    pred = torch.tensor([0, 1, 1, 1, 2, 0])             # ...and never predicted
    scores = torch.nn.functional.one_hot(pred, 4).float()[None]
    present = f1_score(targets, pred, average="macro")
    every = f1_score(targets, pred, labels=range(4), average="macro", zero_division=0)
    assert every == pytest.approx(present * 3 / 4)
    for average_over, expected in (("present", present), ("all", every)):
        counts = GridCounts(1, 4, multilabel=False, average_over=average_over)
        counts.update(scores, targets)
        assert counts.macro_f1()[0].item() == pytest.approx(expected, abs=1e-9)
        assert macro_f1_score(targets.numpy(), pred.numpy(), 4, average_over) == pytest.approx(expected, abs=1e-9)
    assert GridCounts(1, 4, multilabel=False).average_over == "present"
    # multilabel: the same two definitions over the label columns
    truth = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0]])   # class 2: no sample
    ml_scores = torch.tensor([[0.9, 0.1, 0.2], [0.8, 0.2, 0.1], [0.3, 0.7, 0.4]])[None]
    ml_pred = (ml_scores[0] > 0.5).numpy()
    per_class = f1_score(truth.numpy(), ml_pred, average=None, zero_division=0)
    for average_over, expected in (("present", per_class[:2].mean()), ("all", per_class.mean())):
        counts = GridCounts(1, 3, multilabel=True, average_over=average_over)
        counts.update(ml_scores, truth)
        assert counts.macro_f1()[0].item() == pytest.approx(expected, abs=1e-9)
    with pytest.raises(ValueError, match="metrics.average_over='most'; choose one of"):
        GridCounts(1, 4, multilabel=False, average_over="most")
