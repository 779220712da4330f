"""The paired bootstrap over test proteins against a slow reference, Holm against a worked example,
protein-level counts against `xferlab.metrics`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from xferlab import metrics
from xferlab.reporting.stats import (Bootstrap, Condition, bootstrap_p, holm, interval, target_counts,
                                     verdict)


def predictions(rng, n_targets=12, crops=3, k=3, skill=0.7, prefix="t"):
    labels = np.repeat(rng.integers(0, k, n_targets), crops)
    scores = rng.random((len(labels), k))
    scores[np.arange(len(labels)), labels] += skill * rng.random(len(labels))
    scores /= scores.sum(axis=1, keepdims=True)
    table = pd.DataFrame({"target": np.repeat([f"{prefix}{i:02d}" for i in range(n_targets)], crops),
                          "label": labels, "pred": scores.argmax(axis=1)})
    for c in range(k):
        table[f"score/{c}"] = scores[:, c]
    return table


def test_the_vectorised_paired_bootstrap_equals_resampling_targets_one_draw_at_a_time():
    rng = np.random.default_rng(0)
    splits = {0: [predictions(rng, prefix="a"), predictions(rng, skill=0.2, prefix="a")],
              1: [predictions(rng, prefix="b"), predictions(rng, skill=0.2, prefix="b")]}
    conditions = [Condition(name, {"crop": {(s, 0): target_counts(splits[s][i], 3) for s in splits}, "protein": {}})
                  for i, name in enumerate(("A", "B"))]
    boot = Bootstrap(conditions, n_boot=60, seed=3)
    fast = boot.values(conditions[0], "macro_f1", "crop", "present") - boot.values(conditions[1], "macro_f1", "crop",
                                                                                   "present")
    slow = np.zeros(60)
    for s, (a, b) in splits.items():
        order, weights = boot.order[s], boot.weights[s]
        for i in range(60):
            drawn = np.repeat(order, weights[i])  # each target as often as it was drawn, all its crops along
            rows = {name: pd.concat([t[t["target"] == x] for x in drawn]) for name, t in (("A", a), ("B", b))}
            slow[i] += (f1_score(rows["A"]["label"], rows["A"]["pred"], average="macro")
                        - f1_score(rows["B"]["label"], rows["B"]["pred"], average="macro")) / len(splits)
    np.testing.assert_allclose(fast, slow, atol=1e-12)
    lo, hi = interval(fast)
    assert lo < np.median(fast) < hi


def test_draws_are_shared_within_a_split_and_independent_between_splits():
    rng = np.random.default_rng(1)
    tables = {s: predictions(rng, prefix=f"s{s}") for s in (0, 1)}
    c = Condition("A", {"crop": {(s, 0): target_counts(t, 3) for s, t in tables.items()}, "protein": {}})
    boot = Bootstrap([c], n_boot=500)
    assert all(w.sum(axis=1).tolist() == [12] * 500 for w in boot.weights.values())
    assert not np.array_equal(boot.weights[0], boot.weights[1])
    assert Bootstrap([c], n_boot=500).weights[0].tolist() == boot.weights[0].tolist()  # seeded


def test_protein_level_counts_score_one_mean_prediction_per_target():
    table = predictions(np.random.default_rng(2))
    tc = target_counts(table, 3, "protein")
    got = metrics.macro_f1(tc.resampled(np.ones((1, len(tc.targets))), "present"))[0]
    expected = metrics.score(table["label"].to_numpy(), table[[f"score/{c}" for c in range(3)]].to_numpy(),
                             classes=list("abc"), multilabel=False, groups=table["target"].to_numpy())
    assert got == pytest.approx(expected["test/protein_macro_f1"], abs=1e-12)
    assert tc.n.tolist() == [1] * 12  # one prediction per protein


def test_holm_on_a_worked_example():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone: 0.06 for the last
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])
    assert holm([]).tolist() == []


def test_bootstrap_p_and_verdicts():
    assert bootstrap_p(np.full(999, 0.1)) == pytest.approx(2 / 1000)  # never 0
    assert bootstrap_p(np.linspace(-1, 1, 1001)) == 1.0
    assert verdict("a", "b", 0.012, 0.004, 0.020, 0.01) == "a > b: +0.0120 [+0.0040, +0.0200], Holm p = 0.01"
    assert verdict("a", "b", -0.012, -0.020, -0.004, 0.01) == "b > a: +0.0120 [+0.0040, +0.0200], Holm p = 0.01"
    assert verdict("a", "b", 0.01, -0.01, 0.03, 0.3).startswith("a vs b: not separable (+0.0100")
