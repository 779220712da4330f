"""The linear probe (`head=linear`): the same optimum as scikit-learn's LogisticRegression at the
same penalty, the penalty chosen on validation, bounded memory with the same result, clear errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from xferlab.data.splits import TEST, TRAIN, VAL
from xferlab.heads.base import HeadData
from xferlab.heads.logistic import Preconditioner, Rows, loss_and_grad, minimise, standardisation
from xferlab.heads.probe import LinearProbe, penalty_path, smoothed_f1

sklearn = pytest.importorskip("sklearn")
from sklearn.linear_model import LogisticRegression  # noqa: E402


def correlated_data(n=600, d=24, k=4, seed=0, noise=1.5):
    """Class means in a few directions, mixed into correlated, badly scaled features."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    means = rng.normal(size=(k, d))
    z = means[y] + noise * rng.normal(size=(n, d))
    mix = rng.normal(size=(d, d)) + 3 * np.eye(d)
    x = (z @ mix) * rng.uniform(0.1, 10, d) + rng.normal(size=d) * 5
    split = rng.choice([TRAIN, TRAIN, TRAIN, VAL, TEST], size=n).astype(np.int8)
    return x.astype(np.float32), y, split


def head_data(x, y, split, k, multilabel=False):
    return HeadData(features=x, labels=y, split=split, classes=[f"c{i}" for i in range(k)], multilabel=multilabel,
                    seed=0, average_over="present", make_trainer=None)


def fit_at(x, y, l2, multilabel=False, weight=None, pos_weight=None, resident=True, chunk_rows=65536, tol=1e-9):
    rows_idx = np.arange(len(x))
    mean, std = standardisation(x, rows_idx)
    k = y.shape[1] if multilabel else int(y.max()) + 1
    rows = Rows(x, y, weight, mean, std, torch.device("cpu"), torch.float64, chunk_rows, resident, k)
    theta = torch.zeros(k, x.shape[1] + 1, dtype=torch.float64)
    fit = minimise(theta, rows, l2, multilabel, Preconditioner(rows), pos_weight=pos_weight, tol=tol, rtol=1e-6,
                   max_iter=5000)
    return fit, mean, std


@pytest.mark.parametrize("l2", [1e-1, 1e-3, 1e-4])
def test_same_optimum_as_scikit_learn_multinomial(l2):
    x, y, _ = correlated_data()
    fit, mean, std = fit_at(x, y, l2)
    assert fit.converged
    xs = (x.astype(np.float64) - mean) / std
    sk = LogisticRegression(C=1.0 / (l2 * len(x)), tol=1e-10, max_iter=20000).fit(xs, y)
    w = fit.theta[:, :-1].numpy()
    assert np.abs(w - sk.coef_).max() <= 1e-4 * max(1.0, np.abs(sk.coef_).max())
    ours = torch.softmax(torch.from_numpy(xs) @ fit.theta[:, :-1].T + fit.theta[:, -1], dim=1).numpy()
    np.testing.assert_allclose(ours, sk.predict_proba(xs), atol=1e-5)


def test_balanced_class_weights_match_scikit_learn():
    x, y, _ = correlated_data(seed=3)
    keep = (y != 0) | (np.arange(len(y)) % 4 == 0)  # class 0 rarer
    x, y = x[keep], y[keep]
    counts = np.bincount(y)
    weight = (len(y) / (len(counts) * counts))[y]
    fit, mean, std = fit_at(x, y, 1e-3, weight=weight)
    xs = (x.astype(np.float64) - mean) / std
    sk = LogisticRegression(C=1.0 / (1e-3 * len(x)), tol=1e-10, max_iter=20000, class_weight="balanced").fit(xs, y)
    assert np.abs(fit.theta[:, :-1].numpy() - sk.coef_).max() <= 1e-4 * max(1.0, np.abs(sk.coef_).max())


def test_multilabel_is_one_logistic_regression_per_class():
    x, y, _ = correlated_data(seed=1, k=3)
    multi = np.stack([y == 0, (y == 1) | (y == 2), y == 2], axis=1).astype(np.float64)
    l2 = 1e-3
    fit, mean, std = fit_at(x, multi, l2, multilabel=True)
    xs = (x.astype(np.float64) - mean) / std
    for c in range(3):
        sk = LogisticRegression(C=1.0 / (l2 * len(x)), tol=1e-10, max_iter=20000).fit(xs, multi[:, c])
        assert np.abs(fit.theta[c, :-1].numpy() - sk.coef_[0]).max() <= 1e-4 * max(1.0, np.abs(sk.coef_).max())
        assert abs(fit.theta[c, -1].item() - sk.intercept_[0]) <= 1e-3


def test_soft_targets_reach_the_stationary_point():
    """Graded labels stay soft: at the fit, the gradient written out in numpy (not the code's) vanishes."""
    x, y, _ = correlated_data(seed=2, k=3)
    rng = np.random.default_rng(0)
    soft = np.clip(np.eye(3)[y] * rng.uniform(0.5, 1, (len(y), 1)) + rng.uniform(0, 0.2, (len(y), 3)), 0, 1)
    pos_weight = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    l2 = 1e-2
    fit, mean, std = fit_at(x, soft, l2, multilabel=True, pos_weight=pos_weight)
    xs = (x.astype(np.float64) - mean) / std
    w, b = fit.theta[:, :-1].numpy(), fit.theta[:, -1].numpy()
    p = 1 / (1 + np.exp(-(xs @ w.T + b)))
    pw = pos_weight.numpy()
    dz = p * (pw * soft + 1 - soft) - pw * soft
    grad_w = dz.T @ xs / len(xs) + l2 * w
    grad_b = dz.mean(axis=0)
    assert np.abs(grad_w).max() < 1e-7 and np.abs(grad_b).max() < 1e-7


def test_streamed_rows_give_the_resident_result():
    """Rows kept on the host and evaluated in small chunks: the same objective, the same fit."""
    x, y, _ = correlated_data(seed=4)
    whole, _, _ = fit_at(x, y, 1e-3)
    streamed, _, _ = fit_at(x, y, 1e-3, resident=False, chunk_rows=37)
    np.testing.assert_allclose(streamed.theta.numpy(), whole.theta.numpy(), atol=1e-6)


def test_more_dimensions_than_rows_is_the_same_optimum():
    """D > n: the search runs in the rows' span (the Gram route); the optimum is scikit-learn's."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(60, 150)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 1).astype(int)
    fit, mean, std = fit_at(x, y, 1e-2)
    xs = (x.astype(np.float64) - mean) / std
    sk = LogisticRegression(C=1.0 / (1e-2 * len(x)), tol=1e-10, max_iter=20000).fit(xs, y)
    assert np.abs(fit.theta[:, :-1].numpy() - sk.coef_).max() <= 1e-4 * max(1.0, np.abs(sk.coef_).max())


def test_loss_and_grad_match_autograd():
    x, y, _ = correlated_data(n=80, d=6, k=3, seed=6)
    mean, std = standardisation(x, np.arange(len(x)))
    rows = Rows(x, y, None, mean, std, torch.device("cpu"), torch.float64, 30, True, 3)
    theta = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    loss, grad = loss_and_grad(theta.detach(), rows, 0.3, False)
    xs = torch.from_numpy((x.astype(np.float64) - mean) / std)
    ref = torch.nn.functional.cross_entropy(xs @ theta[:, :-1].T + theta[:, -1], torch.from_numpy(y)) \
        + 0.15 * (theta[:, :-1] ** 2).sum()
    ref.backward()
    assert abs(loss.item() - ref.item()) < 1e-10
    torch.testing.assert_close(grad, theta.grad)


def test_probe_chooses_on_validation_and_scores_test_once():
    x, y, split = correlated_data(n=900, seed=7)
    probe = LinearProbe(l2={"start": 1.0, "stop": 1e-4, "per_decade": 1}, patience=None, smooth=0)
    result = probe.fit(head_data(x, y, split, 4))
    assert np.array_equal(result.rows, np.nonzero(split == TEST)[0])
    assert result.scores.shape == ((split == TEST).sum(), 4)
    np.testing.assert_allclose(result.scores.sum(axis=1), 1, atol=1e-5)
    path = result.info["path"]
    assert [p["l2"] for p in path] == pytest.approx([1.0, 0.1, 0.01, 1e-3, 1e-4])
    best = max(path, key=lambda p: (p["val_macro_f1"], -p["val_loss"]))
    assert result.selection["head/l2"] == best["l2"]
    assert result.selection["val/macro_f1"] == best["val_macro_f1"]
    assert result.selection["head/converged"]
    assert result.selection["head/C"] == pytest.approx(1 / (best["l2"] * (split == TRAIN).sum()))
    # the standalone module gives the test scores from raw embeddings
    with torch.no_grad():
        again = torch.softmax(result.module(torch.from_numpy(x[result.rows])), dim=1).numpy()
    np.testing.assert_allclose(again, result.scores, atol=1e-4)


def test_probe_is_deterministic_and_ignores_the_seed():
    x, y, split = correlated_data(seed=8)
    a = LinearProbe().fit(head_data(x, y, split, 4))
    data = head_data(x, y, split, 4)
    data.seed = 123
    b = LinearProbe().fit(data)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_path_stops_after_patience_without_improvement():
    x, y, split = correlated_data(seed=9, noise=0.5)
    probe = LinearProbe(l2={"start": 10.0, "stop": 1e-8, "per_decade": 1}, patience=2, smooth=0)
    result = probe.fit(head_data(x, y, split, 4))
    path = result.info["path"]
    values = [p["val_macro_f1"] for p in path]
    best = int(np.argmax(values))
    assert len(path) < len(probe.path)
    assert len(path) - 1 - best == 2


def test_smoothed_f1_averages_neighbours_with_the_ends_repeated():
    assert smoothed_f1([0.3, 0.6, 0.3], 1) == pytest.approx([0.4, 0.4, 0.4])
    assert smoothed_f1([0.1, 0.2], 0) == [0.1, 0.2]
    # a lone spike loses to a broad plateau
    values = [0.50, 0.70, 0.50, 0.62, 0.63, 0.62]
    assert int(np.argmax(smoothed_f1(values, 1))) == 4


def test_penalty_path_forms_and_errors():
    assert penalty_path({"start": 0.1, "stop": 1e-3, "per_decade": 2}) == pytest.approx(
        [0.1, 0.1 / 10 ** 0.5, 0.01, 0.01 / 10 ** 0.5, 1e-3])
    assert penalty_path([1e-3, 1e-1]) == [1e-1, 1e-3]
    assert penalty_path(0.5) == [0.5]
    with pytest.raises(ValueError, match="head.l2"):
        penalty_path([0.1, -1])
    with pytest.raises(ValueError, match="per_decade"):
        penalty_path({"start": 0.1, "stop": 1e-3})
    with pytest.raises(ValueError, match="twice"):
        penalty_path([0.1, 0.1])


def test_bad_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="head.patience"):
        LinearProbe(patience=0)
    with pytest.raises(ValueError, match="head.dtype"):
        LinearProbe(dtype="float16")
    with pytest.raises(ValueError, match="head.class_weights"):
        LinearProbe(class_weights="inverse")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_gpu_without_cuda_is_an_error_not_a_fallback():
    x, y, split = correlated_data(n=100)
    with pytest.raises(RuntimeError, match="no CUDA device"):
        LinearProbe(device="gpu").fit(head_data(x, y, split, 4))


def test_empty_validation_split_is_named():
    x, y, split = correlated_data(n=100)
    split[split == VAL] = TRAIN
    with pytest.raises(ValueError, match="val split is empty"):
        LinearProbe().fit(head_data(x, y, split, 4))



def test_a_fit_that_did_not_converge_warns_only_when_it_is_the_penalty_chosen(caplog):
    """Every unconverged fit of the path goes to the job's log (INFO); the console's warning level
    hears only about the chosen penalty's, the one whose scores are reported."""
    import logging

    x, y, split = correlated_data(n=600, seed=11)
    probe = LinearProbe(l2={"start": 1.0, "stop": 1e-3, "per_decade": 1}, patience=None, smooth=0, max_iter=2)
    with caplog.at_level(logging.INFO, logger="xferlab.heads.probe"):
        result = probe.fit(head_data(x, y, split, 4))
    assert not result.selection["head/converged"]
    infos = [r for r in caplog.records if r.levelno == logging.INFO and "not converged" in r.getMessage()]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "not converged" in r.getMessage()]
    assert len(infos) == len(result.info["path"]) == 4
    assert warned == [m for m in warned if f"chosen penalty l2={result.selection['head/l2']:.3g}" in m] and len(warned) == 1
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="xferlab.heads.probe"):
        converged = LinearProbe(l2={"start": 1.0, "stop": 1e-2, "per_decade": 1}, patience=None).fit(
            head_data(x, y, split, 4))
    assert converged.selection["head/converged"]
    assert not [r for r in caplog.records if r.levelno == logging.WARNING and "not converged" in r.getMessage()]
