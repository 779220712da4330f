"""The paired bootstrap over test proteins against a slow reference, its draws within classes, the
BCa interval and its p-value, Holm against a worked example, protein-level counts against
`xferlab.metrics`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from xferlab import metrics
from xferlab.reporting import calibration
from xferlab.reporting.intervals import Replicates
from xferlab.reporting.stats import (Bootstrap, Condition, bootstrap_p, holm, interval, stratified_draws,
                                     target_counts, verdict)


def predictions(rng, n_targets=12, crops=3, k=3, skill=0.7, prefix="t", labels=None):
    """A predictions table; `labels` (one per target) fixes the targets' classes, as every
    condition scored on the same split shares them."""
    per_target = rng.integers(0, k, n_targets) if labels is None else np.asarray(labels)
    labels = np.repeat(per_target, crops)
    scores = rng.random((len(labels), k))
    scores[np.arange(len(labels)), labels] += skill * rng.random(len(labels))
    scores /= scores.sum(axis=1, keepdims=True)
    table = pd.DataFrame({"target": np.repeat([f"{prefix}{i:02d}" for i in range(len(per_target))], crops),
                          "label": labels, "pred": scores.argmax(axis=1)})
    for c in range(k):
        table[f"score/{c}"] = scores[:, c]
    return table


def two_conditions(rng, n_targets=12):
    """Conditions A and B scored on the same two splits (same targets, same labels)."""
    splits = {}
    for s, prefix in enumerate("ab"):
        labels = rng.permutation(np.arange(n_targets) % 3)
        splits[s] = [predictions(rng, n_targets, prefix=prefix, labels=labels),
                     predictions(rng, n_targets, skill=0.2, prefix=prefix, labels=labels)]
    conditions = [Condition(name, {"crop": {(s, 0, 0): target_counts(splits[s][i], 3) for s in splits}, "protein": {}})
                  for i, name in enumerate(("A", "B"))]
    return splits, conditions


def weighted_f1(table, target_weight):
    """scikit-learn's macro F1 with each crop weighted by its target's bootstrap weight (a target
    drawn twice counts twice; Rao-Wu weights are fractions)."""
    w = table["target"].map(target_weight).to_numpy(float)
    keep = w > 0
    return f1_score(table["label"][keep], table["pred"][keep], average="macro", sample_weight=w[keep])


def test_the_vectorised_paired_bootstrap_equals_resampling_targets_one_draw_at_a_time():
    # Rao-Wu draws within classes (weights n / (n - 1) per draw): the reference weighs each crop
    # by its target's weight; before issue 24 the draws were whole counts regardless of class
    splits, conditions = two_conditions(np.random.default_rng(0))
    boot = Bootstrap(conditions, n_boot=60, seed=3, resampling="rao_wu")
    a, b = (boot.replicates(c, "macro_f1", "crop", "present") for c in conditions)
    diff = a - b
    slow = np.zeros(60)
    for s, (ta, tb) in splits.items():
        order, weights = boot.order[s], boot.weights[s]
        for i in range(60):
            w = dict(zip(order, weights[i]))
            slow[i] += (weighted_f1(ta, w) - weighted_f1(tb, w)) / len(splits)
    np.testing.assert_allclose(diff.draws, slow, atol=1e-12)
    point = np.mean([f1_score(t["label"], t["pred"], average="macro") for t, _ in splits.values()])
    assert float(a.point) == pytest.approx(point, abs=1e-12)
    lo, hi = interval(diff)
    assert lo < np.median(diff.draws) < hi


def test_the_report_s_draws_are_rao_wu_draws_centred_where_plain_draws_within_classes_are():
    # the same Rao-Wu draws as resampling="rao_wu" (same generator, drawn first), each quantity moved
    # by one constant so that its mean is that of plain n-of-n draws within classes, computed here
    # one draw at a time from the bootstrap's own plain weights
    splits, conditions = two_conditions(np.random.default_rng(6))
    centred = Bootstrap(conditions, n_boot=80, seed=2)
    rao_wu = Bootstrap(conditions, n_boot=80, seed=2, resampling="rao_wu")
    assert centred.resampling == "rao_wu_centred"
    assert all(np.array_equal(centred.weights[s], rao_wu.weights[s]) for s in splits)
    for s in splits:  # plain draws: whole numbers, every class keeps its count
        classes = centred.classes[s]
        assert set(np.unique(centred.centring[s])) <= set(range(len(classes) + 1))
        for k in np.unique(classes):
            np.testing.assert_allclose(centred.centring[s][:, classes == k].sum(axis=1), (classes == k).sum())
    for i, c in enumerate(conditions):
        got = centred.replicates(c, "macro_f1", "crop", "present")
        spread = rao_wu.replicates(c, "macro_f1", "crop", "present")
        plain_mean = np.mean([sum(weighted_f1(splits[s][i], dict(zip(centred.order[s], centred.centring[s][j])))
                                  for s in splits) / len(splits) for j in range(80)])
        np.testing.assert_allclose(got.draws - got.draws.mean(), spread.draws - spread.draws.mean(), atol=1e-12)
        assert got.draws.mean() == pytest.approx(plain_mean, abs=1e-12)
        assert float(got.point) == float(spread.point)
        np.testing.assert_array_equal(got.influence, spread.influence)


def test_the_jackknife_leaves_one_protein_out_of_every_unit_of_its_split():
    splits, conditions = two_conditions(np.random.default_rng(4))
    boot = Bootstrap(conditions, n_boot=10)
    rep = boot.replicates(conditions[0], "macro_f1", "crop", "present")
    change = []
    for s, (ta, _) in splits.items():
        full = {t: 1.0 for t in boot.order[s]}
        other = weighted_f1(splits[1 - s][0], {t: 1.0 for t in boot.order[1 - s]})
        for t in boot.order[s]:
            change.append((weighted_f1(ta, {**full, t: 0.0}) + other) / 2 - float(rep.point))
    change = np.array(change)
    expected = np.zeros_like(change)
    classes = np.concatenate([boot.classes[s] for s in boot.order])
    split_of = np.concatenate([[s] * len(boot.order[s]) for s in boot.order])
    for s in boot.order:
        for k in range(3):
            h = (split_of == s) & (classes == k)
            n = h.sum()
            expected[h] = (n - 1) / n * (change[h].mean() - change[h])  # centred in its class, scaled
    np.testing.assert_allclose(rep.influence, expected, atol=1e-12)


def test_draws_keep_every_class_count_are_shared_and_seeded():
    rng = np.random.default_rng(1)
    tables = {s: predictions(rng, n_targets=20, prefix=f"s{s}") for s in (0, 1)}
    c = Condition("A", {"crop": {(s, 0, 0): target_counts(t, 3) for s, t in tables.items()}, "protein": {}})
    boot = Bootstrap([c], n_boot=500)
    for s, w in boot.weights.items():
        classes = boot.classes[s]
        for k in np.unique(classes):
            n = (classes == k).sum()
            np.testing.assert_allclose(w[:, classes == k].sum(axis=1), n)  # each class keeps its count
            if n > 1:  # Rao-Wu: n - 1 draws of weight n / (n - 1)
                assert set(np.unique(np.round(w[:, classes == k] * (n - 1) / n, 9))) <= set(range(n))
    assert not np.array_equal(boot.weights[0], boot.weights[1])  # independent between splits
    again = Bootstrap([c], n_boot=500)
    assert all(np.array_equal(again.weights[s], boot.weights[s]) for s in boot.weights)  # seeded
    plain = Bootstrap([c], n_boot=500, resampling="stratified")
    assert all(set(np.unique(w)) <= set(range(21)) for w in plain.weights.values())  # whole draws
    old = Bootstrap([c], n_boot=500, resampling="unstratified")  # the earlier draw, still reachable
    classes = old.classes[0]
    assert (old.weights[0].sum(axis=1) == 20).all() and old.weights[0][:, classes == 0].sum(axis=1).std() > 0


def test_conditions_share_the_draws_so_a_difference_is_paired():
    splits, conditions = two_conditions(np.random.default_rng(2))
    boot = Bootstrap(conditions, n_boot=200, seed=5)
    a, b = (boot.replicates(c, "macro_f1", "crop", "present") for c in conditions)
    np.testing.assert_allclose((a - b).draws, a.draws - b.draws)
    # against the same condition the difference is exactly 0 in every draw: the draws are shared
    assert np.all((a - boot.replicates(conditions[0], "macro_f1", "crop", "present")).draws == 0)


def test_conditions_that_disagree_on_a_targets_class_are_refused_by_name():
    rng = np.random.default_rng(3)
    a, b = predictions(rng, labels=[0, 1, 2] * 4), predictions(rng, labels=[1, 1, 2] * 4)
    conditions = [Condition(n, {"crop": {(7, 0, 0): target_counts(t, 3)}, "protein": {}}) for n, t in (("A", a), ("B", b))]
    with pytest.raises(ValueError, match=r"test target 't00' of split_seed 7 has class 0 in condition 'A'.*class 1 in "
                                         r"condition 'B'"):
        Bootstrap(conditions, n_boot=10)


def test_a_class_with_a_single_test_protein_stays_in_every_draw_with_no_influence():
    rng = np.random.default_rng(6)
    labels = [0, 0, 0, 0, 1, 1, 1, 2]  # class 2: one test protein
    a = predictions(rng, n_targets=8, labels=labels, skill=0.5)
    c = Condition("A", {"crop": {(0, 0, 0): target_counts(a, 3)}, "protein": {}})
    boot = Bootstrap([c], n_boot=300)
    single = boot.classes[0] == 2
    assert single.sum() == 1 and (boot.weights[0][:, single] == 1).all()
    np.testing.assert_array_equal(stratified_draws(np.array([5]), 4, np.random.default_rng(0)), np.ones((4, 1)))
    rep = boot.replicates(c, "f1", "crop", "present")
    assert (rep.influence[single] == 0).all()
    lo, hi = interval(rep)
    assert np.all(np.isfinite(lo)) and np.all(lo <= rep.point + 1e-12) and np.all(rep.point <= hi + 1e-12)


def test_bca_is_the_percentile_interval_when_draws_and_jackknife_are_symmetric():
    rng = np.random.default_rng(7)
    x, l = rng.gamma(2.0, size=1000), rng.gamma(2.0, size=40)
    rep = Replicates(np.float64(0.5), 0.5 + np.concatenate([x, -x]), np.concatenate([l, -l]))
    assert rep.bias() == 0 and abs(rep.acceleration()) < 1e-15
    np.testing.assert_allclose(interval(rep), interval(rep, method="percentile"))
    assert bootstrap_p(rep) == bootstrap_p(rep, method="percentile")
    # draws below the point (a downward bias of the estimate) move the interval up, skewness too
    shifted = Replicates(np.float64(0.5), rep.draws - 0.3, rep.influence)
    assert shifted.bias() > 0 and interval(shifted)[0] > interval(shifted, method="percentile")[0]
    skewed = Replicates(np.float64(0.5), rep.draws, np.concatenate([l, -l / 2]))
    assert skewed.acceleration() > 0 and interval(skewed)[1] > interval(rep)[1]


def test_bca_endpoints_follow_the_formula():
    rng = np.random.default_rng(8)
    draws = rng.normal(size=20001)
    rep = Replicates(np.float64(0.3), draws, rng.gamma(2.0, size=50) - 1.5)
    z0, a = float(rep.bias()), float(rep.acceleration())
    normal = __import__("statistics").NormalDist()
    for z, end in zip((normal.inv_cdf(0.025), normal.inv_cdf(0.975)), interval(rep)):
        share = normal.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
        assert end == pytest.approx(np.quantile(draws, share, method="hazen"), abs=2e-3)


@pytest.mark.parametrize("seed", range(40))
def test_the_p_value_and_the_interval_never_disagree(seed):
    rng = np.random.default_rng(seed)
    draws = rng.gamma(rng.uniform(0.5, 5), size=int(rng.integers(200, 3000))) * rng.choice([-1, 1])
    draws = draws - np.median(draws) + rng.normal(0, 2)
    rep = Replicates(np.float64(np.median(draws) + rng.normal(0, 0.5)), draws, rng.gamma(1.0, size=30) - 1)
    for method in ("bca", "percentile", "basic"):
        p = bootstrap_p(rep, method)
        for level in (0.8, 0.9, 0.95, 0.99):
            lo, hi = interval(rep, level, method)
            if abs(p - (1 - level)) > 1e-9:
                assert (p < 1 - level) == (lo > 0 or hi < 0), (method, level, p, lo, hi)


def test_bootstrap_p_and_verdicts():
    def draws(values, point):
        return Replicates(np.float64(point), np.asarray(values, dtype=float), np.zeros(3))
    assert bootstrap_p(draws(np.full(999, 0.1), 0.1)) == pytest.approx(2 / 1000)  # never 0
    assert bootstrap_p(draws(np.linspace(-1, 1, 1001), 0.0)) == 1.0
    # with z0 = a = 0: twice the smaller share of draws on either side of 0
    assert bootstrap_p(draws(np.linspace(-1, 3, 1001), 1.0), "percentile") == pytest.approx(0.5, abs=2e-3)
    assert verdict("a", "b", 0.012, 0.004, 0.020, 0.01) == "a > b: +0.0120 [+0.0040, +0.0200], Holm p = 0.01"
    assert verdict("a", "b", -0.012, -0.020, -0.004, 0.01) == "b > a: +0.0120 [+0.0040, +0.0200], Holm p = 0.01"
    assert verdict("a", "b", 0.01, -0.01, 0.03, 0.3).startswith("a vs b: not separable (+0.0100")


def test_protein_level_counts_score_one_mean_prediction_per_target():
    table = predictions(np.random.default_rng(2))
    tc = target_counts(table, 3, "protein")
    got = metrics.macro_f1(tc.resampled(np.ones((1, len(tc.targets))), "present"))[0]
    expected = metrics.score(table["label"].to_numpy(), table[[f"score/{c}" for c in range(3)]].to_numpy(),
                             classes=list("abc"), multilabel=False, groups=table["target"].to_numpy())
    assert got == pytest.approx(expected["test/protein_macro_f1"], abs=1e-12)
    assert tc.n.tolist() == [1] * 12  # one prediction per protein


def test_the_estimate_sits_inside_its_interval_not_at_its_edge():
    # issue 24: with draws regardless of class the estimate sat at the 88th-93rd percentile of its
    # own draws. On simulated demo-like conditions (12 classes, 3-33 test proteins each, 5 splits x
    # 3 replicate models; mean over 8 experiments) crop macro F1 now lies 35-65 % of the way through
    # its interval. Protein macro F1 is biased low by about 0.4 of its sd, so an interval centred on
    # the truth would put the estimate at about 0.39 (docs/calibration.md); BCa on Rao-Wu draws
    # centred where plain draws are puts it there too (on uncentred Rao-Wu draws, about 0.35).
    world = calibration.make_world()
    position = {"bca": [], "percentile": []}
    for i in range(8):
        conditions = calibration.experiment(world, np.random.default_rng([11, i]))
        new = calibration.intervals(conditions, "rao_wu_centred", ["bca"], n_boot=1000, seed=i)["bca"]
        old = calibration.intervals(conditions, "unstratified", ["percentile"], n_boot=1000, seed=i)["percentile"]
        for method, got in (("bca", new), ("percentile", old)):
            position[method].append([(p - lo) / (hi - lo) for p, lo, hi, _ in
                                     (got["crop macro F1"], got["protein macro F1"])])
    (crop, protein), old = np.mean(position["bca"], axis=0), np.mean(position["percentile"], axis=0)
    assert 0.35 <= crop <= 0.65 and 0.35 <= protein <= 0.65, (crop, protein)
    assert (old > 0.7).all(), old  # what issue 24 found


def test_holm_on_a_worked_example():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone: 0.06 for the last
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])
    assert holm([]).tolist() == []
