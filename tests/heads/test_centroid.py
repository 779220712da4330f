"""`head=centroid`: nearest class mean of whitened, L2-normalised embeddings, by cosine."""

from __future__ import annotations

import json
from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.heads.test_classifier import blobs
from xferlab.data.splits import TEST, TRAIN
from xferlab.heads.base import HeadData
from xferlab.heads.centroid import CentroidClassifier, CentroidHead
from xferlab.job import run_job


def data(x, y, split, classes=("a", "b", "c")):
    return HeadData(features=x, labels=y, split=split, classes=list(classes), multilabel=False, seed=0,
                    average_over="present", make_trainer=partial(L.Trainer))


def test_each_sample_goes_to_the_most_similar_class_mean_by_hand():
    """Without input normalisation the head is the textbook rule: normalised class means of the
    normalised training rows, then the highest cosine similarity."""
    x, y, split = blobs(n=200, k=3, d=5)
    result = CentroidHead("centroid", norm="none").fit(data(x, y, split))
    z = F.normalize(torch.from_numpy(x), dim=1).numpy()
    train = split == TRAIN
    means = np.stack([z[train & (y == c)].mean(axis=0) for c in range(3)])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    expected = (z[split == TEST] @ means.T).argmax(axis=1)
    assert np.array_equal(result.rows, np.nonzero(split == TEST)[0])
    assert np.array_equal(result.scores.argmax(axis=1), expected)
    np.testing.assert_allclose(result.scores.sum(axis=1), 1, rtol=1e-5)
    assert (expected == y[split == TEST]).mean() > 0.9 and result.selection["val/macro_f1"] > 0.9


def test_whitening_uses_training_statistics_only_and_an_untrained_class_never_wins():
    x, y, split = blobs(n=200, k=3, d=5)
    model = CentroidClassifier(5, 4)  # class 3 has no training row: a zero centroid
    model.fit(torch.from_numpy(x[split == TRAIN]), torch.from_numpy(y[split == TRAIN]))
    torch.testing.assert_close(model.norm.mean, torch.from_numpy(x[split == TRAIN].mean(axis=0)))
    assert torch.equal(model.centroids[3], torch.zeros(5))
    logits = model(torch.from_numpy(x))
    assert (logits.argmax(dim=1) != 3).all()


@pytest.mark.parametrize("bad,match", [({"temperature": 0}, "head.temperature=0"), ({"norm": "zca"}, "head norm")])
def test_bad_settings_fail_when_the_head_is_built(bad, match):
    with pytest.raises(ValueError, match=match):
        CentroidHead("centroid", **bad)


def test_centroid_job_end_to_end_with_balanced_accuracy(job_config, monkeypatch):
    """Train (no training: centroids), metrics.json, the CSV log, the W&B summary and the report."""
    import pandas as pd
    from sklearn.metrics import balanced_accuracy_score

    import xferlab.job
    from xferlab.reporting.build import build_report

    mirrored = {}
    mirror = xferlab.job.mirror_to_wandb

    def record(run, metrics, predictions, classes):
        mirror(run, metrics, predictions, classes)
        mirrored.update(run.summary._as_dict())

    monkeypatch.setattr(xferlab.job, "mirror_to_wandb", record)
    result = run_job(job_config("head=centroid", "logger=wandb"))
    m = json.loads((result.run_dir / "metrics.json").read_text())
    assert m["head"] == "centroid" and 0 <= m["val/macro_f1"] <= 1
    predictions = pd.read_csv(result.run_dir / "predictions.csv")
    assert m["test/balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(predictions["label"], predictions["pred"]), abs=1e-12)
    logged = pd.read_csv(result.run_dir / "csv" / "metrics.csv")
    assert logged["test/balanced_accuracy"].dropna().tolist() == [m["test/balanced_accuracy"]]
    assert mirrored["test/balanced_accuracy"] == m["test/balanced_accuracy"]
    text = build_report([result.run_dir], result.run_dir / "report", n_boot=0)
    assert "balanced accuracy" in text and f"{m['test/balanced_accuracy']:.4f}" in text
