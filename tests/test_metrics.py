"""The one metrics module: scores agree with torchmetrics and scikit-learn, streamed grid counts
agree with the array form, and a metric is one registered function."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from torchmetrics.classification import MulticlassF1Score, MultilabelExactMatch, MultilabelF1Score

from xferlab import metrics
from xferlab.metrics import GridCounts, counts, macro_f1_score, score


def grid_value(grid: GridCounts, name: str, g: int) -> float:
    return float(metrics.METRICS[name].compute(grid.counts())[g])


# class 4 is predicted but has no sample: scikit-learn's balanced accuracy warns, as it should here
@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_multiclass_scores_match_torchmetrics_and_sklearn_with_an_absent_class():
    torch.manual_seed(0)
    scores = torch.rand(3, 50, 5).softmax(dim=-1)
    targets = torch.randint(0, 4, (50,))  # class 4 never occurs (it may still be predicted)
    grid = GridCounts(3, 5, multilabel=False)
    grid.update(scores[:, :20], targets[:20])
    grid.update(scores[:, 20:], targets[20:])
    classes = list("abcde")
    for g in range(3):
        pred = scores[g].argmax(dim=1)
        got = score(targets.numpy(), scores[g].numpy(), classes=classes, multilabel=False)
        expected = MulticlassF1Score(5, average="macro")(scores[g], targets).item()
        assert got["test/macro_f1"] == pytest.approx(expected, abs=1e-6)
        assert got["test/macro_f1"] == pytest.approx(f1_score(targets, pred, average="macro"), abs=1e-12)
        assert got["test/accuracy"] == pytest.approx(accuracy_score(targets, pred), abs=1e-12)
        assert got["test/balanced_accuracy"] == pytest.approx(balanced_accuracy_score(targets, pred), abs=1e-12)
        np.testing.assert_allclose([got[f"test/f1/{c}"] for c in classes],
                                   MulticlassF1Score(5, average="none")(scores[g], targets).numpy(), atol=1e-6)
        for name in ("macro_f1", "accuracy", "balanced_accuracy"):  # the streamed grid form gives the same
            assert grid_value(grid, name, g) == got[f"test/{name}"]


def test_multilabel_scores_match_torchmetrics_and_sklearn():
    torch.manual_seed(1)
    scores = torch.rand(2, 40, 4)
    targets = (torch.rand(40, 4) > 0.6).long()
    targets[:, 3] = 0  # a class nobody has
    grid = GridCounts(2, 4, multilabel=True)
    grid.update(scores, targets)
    for g in range(2):
        pred = (scores[g] > 0.5).numpy()
        got = score(targets.numpy(), scores[g].numpy(), classes=list("abcd"), multilabel=True)
        expected = MultilabelF1Score(4, threshold=0.5, average="macro")(scores[g], targets).item()
        assert got["test/macro_f1"] == pytest.approx(expected, abs=1e-6)
        assert got["test/macro_f1"] == pytest.approx(
            f1_score(targets.numpy(), pred, average="macro", zero_division=0), abs=1e-12)
        exact = MultilabelExactMatch(4, threshold=0.5)(scores[g], targets).item()
        assert got["test/accuracy"] == pytest.approx(exact, abs=1e-6)
        # balanced accuracy: (sensitivity + specificity) / 2 per class with a positive, averaged
        per_class = [balanced_accuracy_score(targets[:, k].numpy(), pred[:, k]) for k in range(3)]
        assert got["test/balanced_accuracy"] == pytest.approx(np.mean(per_class), abs=1e-12)
        assert grid_value(grid, "macro_f1", g) == got["test/macro_f1"]


def test_macro_f1_over_present_or_all_classes():
    """`present` (default): classes with a target or a prediction, as scikit-learn's default;
    `all`: every class, one never seen nor predicted scoring 0 (scikit-learn with labels=range(K))."""
    targets = np.array([0, 0, 1, 1, 2, 2])          # class 3 of 4 is absent from this split...
    pred = np.array([0, 1, 1, 1, 2, 0])             # ...and never predicted
    scores = np.eye(4)[pred]
    present = f1_score(targets, pred, average="macro")
    every = f1_score(targets, pred, labels=range(4), average="macro", zero_division=0)
    assert every == pytest.approx(present * 3 / 4)
    for average_over, expected in (("present", present), ("all", every)):
        got = score(targets, scores, classes=list("abcd"), multilabel=False, average_over=average_over)
        assert got["test/macro_f1"] == pytest.approx(expected, abs=1e-12)
        assert macro_f1_score(targets, pred, 4, average_over) == pytest.approx(expected, abs=1e-12)
        # balanced accuracy is the mean recall over labelled classes under either setting
        assert got["test/balanced_accuracy"] == pytest.approx(balanced_accuracy_score(targets, pred), abs=1e-12)
    assert GridCounts(1, 4, multilabel=False).average_over == "present"
    truth = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0]])   # class 2: no sample
    ml_scores = np.array([[0.9, 0.1, 0.2], [0.8, 0.2, 0.1], [0.3, 0.7, 0.4]])
    per_class = f1_score(truth, ml_scores > 0.5, average=None, zero_division=0)
    for average_over, expected in (("present", per_class[:2].mean()), ("all", per_class.mean())):
        got = score(truth, ml_scores, classes=list("abc"), multilabel=True, average_over=average_over)
        assert got["test/macro_f1"] == pytest.approx(expected, abs=1e-12)
    for bad in (lambda: GridCounts(1, 4, multilabel=False, average_over="most"),
                lambda: counts(targets, scores, multilabel=False, average_over="most")):
        with pytest.raises(ValueError, match="metrics.average_over='most'; choose one of"):
            bad()


def test_a_registered_metric_is_computed_for_every_score_call_and_listed_for_reports(monkeypatch):
    monkeypatch.setattr(metrics, "METRICS", dict(metrics.METRICS))  # registration stays local to this test

    @metrics.metric("error_rate")
    def error_rate(c):
        return 1 - metrics.accuracy(c)

    got = score(np.array([0, 1, 1]), np.eye(2)[[0, 0, 1]], classes=["a", "b"], multilabel=False, prefix="val/")
    assert got["val/error_rate"] == pytest.approx(1 / 3)
    assert {"test/error_rate", "test/protein_error_rate"} <= set(metrics.reported("test/"))
    assert not any(name.startswith(("test/f1", "test/protein_f1")) for name in metrics.reported("test/"))
    with pytest.raises(ValueError, match="registered twice"):
        metrics.metric("error_rate")(error_rate)


def test_protein_level_scores_average_each_targets_crop_scores():
    """Target t1's three crops vote 2:1 for the wrong class by argmax, but their mean score is right."""
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([[0.45, 0.55], [0.45, 0.55], [0.95, 0.05], [0.2, 0.8], [0.3, 0.7]])
    groups = np.array(["t1", "t1", "t1", "t2", "t2"])
    got = score(labels, scores, classes=["a", "b"], multilabel=False, groups=groups)
    assert got["test/accuracy"] == pytest.approx(3 / 5)
    assert got["test/protein_accuracy"] == 1.0 and got["test/protein_macro_f1"] == 1.0
    names, group_labels, group_scores = metrics.per_group(labels, scores, groups)
    assert names.tolist() == ["t1", "t2"] and group_labels.tolist() == [0, 1]
    np.testing.assert_allclose(group_scores[0], [0.6166666, 0.3833333], atol=1e-6)
