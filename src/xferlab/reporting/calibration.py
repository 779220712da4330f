"""Do the report's 95 % intervals cover the truth 95 % of the time? A simulation from a known
population, run through the report's own code (`stats.counts_per_target`, the arithmetic of
`stats.target_counts`; `stats.Bootstrap`; `intervals.interval`; the paired difference of
`compare.comparisons`).

The population (`World`), shaped like the demo:
- 12 classes of 221, 140, 133, 78, 58, 47, 41, 27, 25, 19, 18 and 18 targets; a split tests 15 %
  of each class (rounded, at least 1): 33, 21, 20, 12, 9, 7, 6, 4, 4, 3, 3, 3 proteins, 125 in all.
- every protein has 4 crops; a model gives each crop a score per class, the softmax of
  `signal[true class] + affinity[true class] + prior bias + protein + crop` logits: the class
  signal is weaker for rarer classes, each class leans towards one neighbour class, common classes
  are favoured, and every protein carries its own offset per class (shared by every model: some
  proteins are hard or look like another class for everyone; plus a smaller part of its own per
  model), so proteins differ in difficulty and in what they are confused with, and the two
  conditions err on the same proteins. Crop noise is partly shared between models too.
- a crop's prediction is its highest score; a protein's is the highest of its crops' mean scores,
  as `metrics.per_group` and `stats.target_counts` compute it.
- two conditions, A and B: B's class signal is lower by `Design.gap`. Each has `replicates`
  models (pretraining seeds), fixed parameters of the population that differ a little in their
  class signals; every model is scored on every split, so a condition has splits x replicates
  units, as the demo's 5 x 3.

The truth: each model's F1 per class from its expected counts on a test set of the split's class
sizes (the probabilities of each prediction given the class, from a large Monte Carlo of proteins
that every model shares), macro-averaged, then averaged over the condition's models; the
difference is A's minus B's.

An experiment draws each split's proteins afresh (independently per split), scores them with every
model and hands the per-target counts to the report's bootstrap; the coverage of a quantity is the
share of experiments whose interval holds its truth.

`python -m xferlab.reporting.calibration --record docs/bench/calibration-<date>.json` writes
docs/calibration.md and the record it is rendered from (`page`).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from xferlab import metrics
from xferlab.reporting.intervals import interval
from xferlab.reporting.stats import LEVELS, Bootstrap, Condition, counts_per_target

CONDITIONS = ("A", "B")
QUANTITIES = ("crop macro F1", "protein macro F1", "crop difference", "protein difference")  # A's; A - B
#: name -> (resampling, interval method); "old" is the report's earlier procedure, "new" today's
PROCEDURES = {"old": ("unstratified", "percentile"), "stratified, percentile": ("stratified", "percentile"),
              "stratified, BCa": ("stratified", "bca"), "Rao-Wu, percentile": ("rao_wu", "percentile"),
              "Rao-Wu, basic": ("rao_wu", "basic"), "Rao-Wu, BCa": ("rao_wu", "bca"),
              "new": ("rao_wu_centred", "bca")}


@dataclass(frozen=True)
class Design:
    """The experiment simulated (defaults: the demo's)."""

    class_sizes: tuple[int, ...] = (221, 140, 133, 78, 58, 47, 41, 27, 25, 19, 18, 18)
    test_fraction: float = 0.15
    crops: int = 4
    splits: int = 5
    replicates: int = 3
    gap: float = 0.15          # B's class signal is lower by this (logits)
    signal: tuple[float, float] = (2.5, 1.5)  # class signal of the rarest class, and how much the commonest adds
    affinity: float = 1.1      # each class's lean towards its neighbour class
    prior_bias: float = 0.3    # times log(class share / mean share), added to every crop's scores
    protein_sd: float = 0.9    # per protein and class, shared by every model
    protein_model_sd: float = 0.35   # per protein, class and model
    crop_sd: float = 0.9       # per crop and class, shared by every model
    crop_model_sd: float = 0.8       # per crop, class and model
    replicate_sd: float = 0.15       # per replicate model and class: how much pretraining seeds differ

    @property
    def num_classes(self) -> int:
        return len(self.class_sizes)

    def test_counts(self) -> np.ndarray:
        """Test proteins per class in a split: 15 % of the class, rounded half up, at least 1."""
        sizes = np.asarray(self.class_sizes, dtype=float)
        return np.maximum(1, np.floor(sizes * self.test_fraction + 0.5)).astype(int)


@dataclass(frozen=True)
class World:
    """The population: `mean` `(M, K, K)` logits of each model for a crop of each true class
    (models in the order A's replicates, then B's)."""

    design: Design
    mean: np.ndarray
    models: tuple[tuple[str, int], ...] = field(default=())


def make_world(design: Design = Design(), seed: int = 0) -> World:
    rng = np.random.default_rng([seed, 1])
    k = design.num_classes
    sizes = np.asarray(design.class_sizes, dtype=float)
    rank = np.log(sizes / sizes.min()) / np.log(sizes.max() / sizes.min())
    signal = design.signal[0] + design.signal[1] * rank
    neighbour = rng.permutation(k)
    neighbour = np.where(neighbour == np.arange(k), (neighbour + 1) % k, neighbour)
    affinity = np.zeros((k, k))
    affinity[np.arange(k), neighbour] = design.affinity
    share = sizes / sizes.sum()
    bias = design.prior_bias * np.log(share / share.mean())
    models, means = [], []
    for condition, offset in zip(CONDITIONS, (0.0, -design.gap)):
        for r in range(design.replicates):
            own = signal + offset + design.replicate_sd * rng.standard_normal(k)
            means.append(np.diag(own) + affinity + bias[None, :])
            models.append((condition, r))
    return World(design, np.stack(means), tuple(models))


def _logits(world: World, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`(M, P, crops, K)` crop logits of every model for proteins of classes `labels`."""
    d = world.design
    m, p, c, k = len(world.models), len(labels), d.crops, d.num_classes
    normal = lambda *shape: rng.standard_normal(shape, dtype=np.float32)  # noqa: E731
    out = world.mean[:, labels, None, :].astype(np.float32)  # (M, P, 1, K)
    out = out + (d.protein_sd * normal(1, p, 1, k) + d.protein_model_sd * normal(m, p, 1, k))
    return out + (d.crop_sd * normal(1, p, c, k) + d.crop_model_sd * normal(m, p, c, k))


def _predictions(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop predictions `(M, P, crops)`, protein predictions `(M, P)` (the highest mean softmax
    score over a protein's crops) and the crop scores."""
    scores = np.exp(logits - logits.max(axis=-1, keepdims=True))
    scores /= scores.sum(axis=-1, keepdims=True)
    return logits.argmax(axis=-1), scores.mean(axis=2, dtype=np.float64).argmax(axis=-1), scores


def population(world: World, proteins_per_class: int = 40_000, seed: int = 12345, chunk: int = 4000) -> dict:
    """The truth of every quantity (`QUANTITIES`, and B's macro F1 per level, `"<level> macro F1, B"`):
    each model's macro F1 from expected counts on a test set with the split's class sizes (the
    share of each prediction per true class from `proteins_per_class` simulated proteins of each
    class), averaged over the condition's models."""
    d = world.design
    rng = np.random.default_rng(seed)
    m, k = len(world.models), d.num_classes
    rates = {level: np.zeros((m, k, k)) for level in LEVELS}
    for true in range(k):
        left = proteins_per_class
        while left:
            n = min(chunk, left)
            crop, protein, _ = _predictions(_logits(world, np.full(n, true), rng))
            for level, pred in (("crop", crop), ("protein", protein)):
                flat = pred.reshape(m, -1)
                rates[level][:, true] += np.stack([np.bincount(f, minlength=k) for f in flat])
            left -= n
    for level in LEVELS:
        rates[level] /= rates[level].sum(axis=2, keepdims=True)
    n_k = d.test_counts().astype(float)
    out = {}
    for level in LEVELS:
        expected = n_k[None, :, None] * rates[level]  # (M, true, predicted)
        tp = np.einsum("mkk->mk", expected)
        truth = expected.sum(axis=2)
        said = expected.sum(axis=1)
        counts = metrics.Counts(tp=tp, fp=said - tp, fn=truth - tp, tn=n_k.sum() - truth - said + tp,
                                correct=tp.sum(axis=1), n=n_k.sum(), multilabel=False)
        f1 = metrics.macro_f1(counts)
        per = {c: float(np.mean([f for f, (name, _) in zip(f1, world.models) if name == c])) for c in CONDITIONS}
        out[f"{level} macro F1"], out[f"{level} macro F1, B"] = per["A"], per["B"]
        out[f"{level} difference"] = per["A"] - per["B"]
    return out


def experiment(world: World, rng: np.random.Generator) -> dict[str, Condition]:
    """One simulated experiment: per condition, per unit `(split, 0, replicate)` and level, the
    per-target counts of its predictions, as `stats.condition_counts` gives them."""
    d = world.design
    n_k = d.test_counts()
    labels = np.repeat(np.arange(d.num_classes), n_k)
    counts = {c: {level: {} for level in LEVELS} for c in CONDITIONS}
    for split in range(d.splits):
        targets = np.array([f"s{split}p{i:04d}" for i in range(len(labels))])  # sorted = protein order
        crop, protein, _ = _predictions(_logits(world, labels, rng))
        crop_of = np.repeat(np.arange(len(labels)), d.crops)
        for (c, r), crop_pred, protein_pred in zip(world.models, crop, protein):
            unit = (split, 0, r)
            counts[c]["crop"][unit] = counts_per_target(targets, crop_of, labels[crop_of], crop_pred.ravel(),
                                                        d.num_classes)
            counts[c]["protein"][unit] = counts_per_target(targets, np.arange(len(labels)), labels, protein_pred,
                                                           d.num_classes)
    return {c: Condition(c, counts[c]) for c in CONDITIONS}


def predictions_table(world: World, rng: np.random.Generator, model: int = 0, split: int = 0) -> pd.DataFrame:
    """One model's predictions of one simulated split as a predictions.csv table (`target`,
    `label`, `pred`, `score/<class>`): to check that `experiment` counts as `stats.target_counts`."""
    d = world.design
    labels = np.repeat(np.arange(d.num_classes), d.test_counts())
    crop, _, scores = _predictions(_logits(world, labels, rng))
    table = pd.DataFrame({"target": np.repeat([f"s{split}p{i:04d}" for i in range(len(labels))], d.crops),
                          "label": np.repeat(labels, d.crops), "pred": crop[model].ravel()})
    for j in range(d.num_classes):
        table[f"score/{j}"] = scores[model, :, :, j].ravel()
    return table


def intervals(conditions: dict[str, Condition], resampling: str, methods: Sequence[str], n_boot: int,
              seed: int) -> dict[str, dict]:
    """Per interval method, `{quantity: (point, low, high, draws' mean)}` as the report computes
    them (`tables.add_intervals`, `compare.comparisons`) from one set of draws, for every quantity of
    `QUANTITIES` (condition A's macro F1, the difference A - B) and B's macro F1 per level."""
    boot = Bootstrap(list(conditions.values()), n_boot, seed=seed, resampling=resampling)
    out: dict[str, dict] = {m: {} for m in methods}
    for level in LEVELS:
        rep = {c: boot.replicates(conditions[c], "macro_f1", level, "present") for c in CONDITIONS}
        for name, r in ((f"{level} macro F1", rep["A"]), (f"{level} macro F1, B", rep["B"]),
                        (f"{level} difference", rep["A"] - rep["B"])):
            for method in methods:
                lo, hi = interval(r, method=method)
                out[method][name] = (float(r.point), float(lo), float(hi), float(r.draws.mean()))
    return out


def simulate(n_experiments: int, procedures: dict[str, tuple[str, str]] | None = None, n_boot: int = 2000,
             design: Design = Design(), seed: int = 0, truth: dict | None = None,
             proteins_per_class: int = 40_000, progress=None) -> pd.DataFrame:
    """One row per (experiment, procedure, quantity): point, low, high, the draws' mean and the
    truth, and whether the interval covers it."""
    procedures = {"new": PROCEDURES["new"]} if procedures is None else procedures
    with threadpool_limits(1):  # small matrix products: more threads only spin on a shared machine
        return _simulate(n_experiments, procedures, n_boot, design, seed, truth, proteins_per_class, progress)


def _simulate(n_experiments, procedures, n_boot, design, seed, truth, proteins_per_class, progress) -> pd.DataFrame:
    world = make_world(design, seed)
    truth = population(world, proteins_per_class) if truth is None else truth
    rows = []
    for i in range(n_experiments):
        conditions = experiment(world, np.random.default_rng([seed, 2, i]))
        for resampling in dict.fromkeys(r for r, _ in procedures.values()):  # one set of draws per resampling
            methods = {m: name for name, (r, m) in procedures.items() if r == resampling}
            for method, got in intervals(conditions, resampling, list(methods), n_boot, seed=i).items():
                rows += [(i, methods[method], q, *v, truth[q]) for q, v in got.items()]
        if progress is not None:
            progress(i)
    out = pd.DataFrame(rows, columns=["experiment", "procedure", "quantity", "point", "low", "high", "draws_mean",
                                      "truth"])
    out["covered"] = (out["low"] <= out["truth"]) & (out["truth"] <= out["high"])
    out["position"] = (out["point"] - out["low"]) / (out["high"] - out["low"])
    return out


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per procedure and quantity: coverage, its binomial standard error, the mean position of the
    point within its interval and where it would sit in intervals of the same width centred on the
    truth (`ideal`: 0.5 + bias / width), the draws' mean minus the point, the shares of truths below
    and above the interval, the mean width, and the estimate's bias and spread over experiments."""
    g = results.assign(shift=results["draws_mean"] - results["point"], width=results["high"] - results["low"],
                       error=results["point"] - results["truth"], below=results["truth"] < results["low"],
                       above=results["truth"] > results["high"]).groupby(["procedure", "quantity"], sort=False)
    out = g.agg(coverage=("covered", "mean"), n=("covered", "size"), position=("position", "mean"),
                shift=("shift", "mean"), width=("width", "mean"), bias=("error", "mean"), sd=("error", "std"),
                below=("below", "mean"), above=("above", "mean"))
    out["se"] = np.sqrt(out["coverage"] * (1 - out["coverage"]) / out["n"])
    out["ideal"] = 0.5 + out["bias"] / out["width"]  # where the estimate sits in intervals centred on the truth
    out["implied"] = out["width"] / (2 * 1.96)  # the standard error a 95 % interval of that width implies
    return out.reset_index()


def markdown(table: pd.DataFrame, design: Design, n_experiments: int, n_boot: int, seconds: float,
             seed: int) -> str:
    """docs/calibration.md: how it was made, old against new, every procedure, and the choice."""
    t = table.set_index(["procedure", "quantity"])
    have = set(t.index.get_level_values(0))

    def cell(procedure: str, quantity: str, column: str, fmt: str = ".3f") -> str:
        return format(t.loc[(procedure, quantity), column], fmt) if procedure in have else "–"

    lines = ["# Calibration of the report's intervals over test proteins", "",
             f"Written by `python -m xferlab.reporting.calibration --experiments {n_experiments} --bootstrap {n_boot} "
             f"--seed {seed} --record docs/bench/calibration-<date>.json` ({seconds / 60:.0f} min on one core; the "
             "record holds the summary below, and `make readme-results` renders this page from the newest one). "
             "Each simulated experiment draws test proteins "
             "from a known population and goes through the report's own code: per-target counts "
             "(`stats.counts_per_target`, the arithmetic of `stats.target_counts`), the shared draws of "
             "`stats.Bootstrap`, `intervals.interval` and the paired difference (`Replicates.__sub__`), as "
             "`tables.add_intervals` and `compare.comparisons` use them. The population "
             "(`src/xferlab/reporting/calibration.py`) is shaped like the demo: "
             f"{design.num_classes} classes with {', '.join(map(str, design.test_counts()))} test proteins per "
             f"split, {design.crops} crops per protein, {design.splits} splits (proteins drawn afresh for each) x "
             f"{design.replicates} replicate models = {design.splits * design.replicates} units per condition, two "
             "conditions A and B scored on the same proteins, proteins that differ in difficulty and in what they "
             "are confused with (for both conditions alike). The truth of a condition is the mean over its models "
             "of the macro F1 from expected counts at the split's class sizes; of a difference, A's truth minus "
             "B's.", "",
             "- **old**: test proteins drawn regardless of class, percentile interval (the report before issue 24).",
             "- **new**: Rao-Wu rescaled draws within each class, moved to the mean of plain draws within each "
             "class, BCa interval (the report now).",
             "- the rows between take one change at a time: plain draws within classes (`stratified`, n of n), "
             "Rao-Wu draws (n - 1 of n, weight n / (n - 1)); percentile, basic (percentiles reflected about the "
             "estimate) or BCa interval.", "",
             f"## Old against new ({n_experiments} experiments; macro F1 of condition A per crop and per protein, "
             "and the paired differences A − B)", "",
             "| quantity | coverage, old | coverage, new | position, old | position, new |", "|---|---|---|---|---|"]
    for q in QUANTITIES:
        lines.append(f"| {q} | {cell('old', q, 'coverage')} | {cell('new', q, 'coverage')} | "
                     f"{cell('old', q, 'position', '.2f')} | {cell('new', q, 'position', '.2f')} |")
    lines += ["", "*Coverage*: share of experiments whose 95 % interval holds the truth (binomial standard error "
              f"about {np.sqrt(0.95 * 0.05 / n_experiments):.3f} at 0.95). *Position*: mean of (estimate − low) / "
              "(high − low); 0.5 is an interval centred on the estimate.", "",
              "## Every procedure", "",
              "*shift*: mean of (draws' mean − estimate); *below / above*: share of experiments whose truth lies "
              "below / above the interval; *half-width / 1.96*: the interval's implied standard error, beside *sd*, "
              "the estimate's real spread over experiments; *bias*: mean of (estimate − truth); *centred on truth*: "
              "the position the estimate would have in intervals of the same width centred on the truth "
              "(0.5 + bias / mean width).", "",
              "| procedure | quantity | coverage | position | centred on truth | shift | below | above | "
              "half-width / 1.96 | sd | bias |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.procedure} | {r.quantity} | {r.coverage:.3f} ± {r.se:.3f} | {r.position:.2f} | "
                     f"{r.ideal:.2f} | {r.shift:+.4f} | {r.below:.3f} | {r.above:.3f} | {r.implied:.4f} | "
                     f"{r.sd:.4f} | {r.bias:+.4f} |")
    decided = {"old", "new", "stratified, percentile", "Rao-Wu, percentile", "Rao-Wu, basic", "Rao-Wu, BCa"} <= have
    lines += ["", "## What the numbers decided", "", *(choice(cell) if decided else []), ""]
    return "\n".join(lines)


def choice(cell) -> list[str]:
    """What the table decided, with its numbers (`cell(procedure, quantity, column, format)`)."""
    def cov(procedure: str, quantity: str) -> str:
        return cell(procedure, quantity, "coverage")

    return [
        "- **Draw within classes.** Drawn regardless of class (old), rare classes go missing from some draws (a "
        "class missing but still predicted scores F1 0) and doubled in others: the draws' mean sits "
        f"{cell('old', 'crop macro F1', 'shift', '+.4f')} (crops) and {cell('old', 'protein macro F1', 'shift', '+.4f')}"
        " (proteins) from the estimate, the estimate at "
        f"{cell('old', 'crop macro F1', 'position', '.2f')} / {cell('old', 'protein macro F1', 'position', '.2f')} of "
        f"its interval, and the interval misses the truth from above ({cell('old', 'crop macro F1', 'above')} / "
        f"{cell('old', 'protein macro F1', 'above')} of experiments). Within classes the draws keep the design's class "
        f"counts; the shift falls to {cell('stratified, percentile', 'crop macro F1', 'shift', '+.4f')} / "
        f"{cell('stratified, percentile', 'protein macro F1', 'shift', '+.4f')}, about the estimate's own bias.",
        "- **Rao-Wu, not plain draws within classes.** Plain draws of n from a class of n shrink the class's variance "
        "by (n - 1) / n, a third for the 3-protein classes, which weigh as much as any in macro F1: the standard "
        f"error their intervals imply for crop macro F1 is {cell('stratified, percentile', 'crop macro F1', 'implied', '.4f')}"
        f" against a real {cell('stratified, percentile', 'crop macro F1', 'sd', '.4f')}, and the paired differences "
        f"cover {cov('stratified, percentile', 'crop difference')} / {cov('stratified, percentile', 'protein difference')}"
        ". Rao-Wu's n - 1 draws of weight n / (n - 1) give the spread back: the differences cover "
        f"{cov('Rao-Wu, percentile', 'crop difference')} / {cov('Rao-Wu, percentile', 'protein difference')}.",
        "- **BCa, not the percentile interval.** Macro F1 of a finite test set is biased low (ratios of small counts; "
        "more so per protein, where a 3-protein class gives 3 predictions): mean estimate − truth "
        f"{cell('Rao-Wu, BCa', 'crop macro F1', 'bias', '+.4f')} (crops), {cell('Rao-Wu, BCa', 'protein macro F1', 'bias', '+.4f')} "
        "(proteins). The percentile interval of Rao-Wu draws therefore misses from above (coverage "
        f"{cov('Rao-Wu, percentile', 'crop macro F1')} / {cov('Rao-Wu, percentile', 'protein macro F1')}). BCa's "
        "bias correction z0 (from the share of draws below the estimate) moves the interval up by what the draws "
        "show, and its acceleration (from the stratified jackknife) allows for skewness: coverage "
        f"{cov('Rao-Wu, BCa', 'crop macro F1')} / {cov('Rao-Wu, BCa', 'protein macro F1')}, the truth below the interval in "
        f"{cell('Rao-Wu, BCa', 'protein macro F1', 'below')} and above it in {cell('Rao-Wu, BCa', 'protein macro F1', 'above')} of "
        "experiments (proteins). For the paired differences, whose bias cancels between the conditions, BCa changes "
        "little.",
        "- **BCa, not the basic interval.** The basic interval (the Rao-Wu draws reflected about the estimate) "
        "undoes the shift too and covers about as often (" + " / ".join(cov('Rao-Wu, basic', q) for q in QUANTITIES)
        + " for the four quantities), but reflecting the draws turns their skewness the wrong way round: per "
        f"protein its misses are lopsided ({cell('Rao-Wu, basic', 'protein macro F1', 'below')} below, "
        f"{cell('Rao-Wu, basic', 'protein macro F1', 'above')} above, against BCa's "
        f"{cell('Rao-Wu, BCa', 'protein macro F1', 'below')} / {cell('Rao-Wu, BCa', 'protein macro F1', 'above')}).",
        "- **Centred where plain draws are.** Since the truth lies above the estimate on average, a calibrated "
        "interval puts the estimate below its middle: an interval of the same width centred on the truth would put "
        f"it at {cell('new', 'crop macro F1', 'ideal', '.2f')} (crops) and {cell('new', 'protein macro F1', 'ideal', '.2f')}"
        f" (proteins). BCa on Rao-Wu draws puts it at {cell('Rao-Wu, BCa', 'crop macro F1', 'position', '.2f')} and "
        f"{cell('Rao-Wu, BCa', 'protein macro F1', 'position', '.2f')}: z0 moves the interval up by the draws' shift, "
        "and n - 1 drawn proteins per class make that shift larger than the estimate's own bias (per protein "
        f"{cell('Rao-Wu, BCa', 'protein macro F1', 'shift', '+.4f')} against a bias of "
        f"{cell('Rao-Wu, BCa', 'protein macro F1', 'bias', '+.4f')}), while plain draws of n show about the bias itself "
        f"({cell('stratified, percentile', 'protein macro F1', 'shift', '+.4f')}). The report's draws therefore keep "
        "Rao-Wu's spread and take the plain draws' mean (the same Rao-Wu draws, each quantity moved by one constant): "
        f"the estimate then sits at {cell('new', 'crop macro F1', 'position', '.2f')} / "
        f"{cell('new', 'protein macro F1', 'position', '.2f')}, coverage "
        f"{cov('new', 'crop macro F1')} / {cov('new', 'protein macro F1')}, the truth below the interval in "
        f"{cell('new', 'protein macro F1', 'below')} and above it in {cell('new', 'protein macro F1', 'above')} of "
        "experiments (proteins), the paired differences covered "
        f"{cov('new', 'crop difference')} / {cov('new', 'protein difference')}.",
        "- **Not a studentised interval**: it needs a standard error inside each of thousands of draws (a jackknife "
        "or second bootstrap per draw), and BCa already covers at the nominal level here.",
        "- Classes with one test protein in a split are kept with weight 1 in every draw and get no jackknife "
        "influence: one protein cannot show how another of its class would differ, so such classes add no variance "
        "to the intervals (the report names them; the simulated demo has none).",
        "- Multilabel runs get no bootstrap: a protein with several labels has no single class to draw within, and "
        "drawing within label sets leaves most sets with one protein.",
    ]


def record(table: pd.DataFrame, design: Design, n_experiments: int, n_boot: int, seconds: float, seed: int,
           proteins_per_class: int, revision: str | None) -> dict:
    """What docs/calibration.md is written from, kept as `docs/bench/calibration-<date>.json`: the
    summary of every procedure and quantity, the design and the run's settings and time."""
    from dataclasses import asdict

    return {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "git_revision": revision, "seconds": seconds,
            "settings": {"experiments": n_experiments, "bootstrap": n_boot, "seed": seed,
                         "proteins": proteins_per_class},
            "design": asdict(design), "summary": table.to_dict(orient="records")}


def page(rec: dict) -> str:
    """docs/calibration.md as `markdown` writes it from a record (`record`)."""
    design = Design(**{k: tuple(v) if isinstance(v, list) else v for k, v in rec["design"].items()})
    s = rec["settings"]
    return markdown(pd.DataFrame(rec["summary"]), design, s["experiments"], s["bootstrap"], rec["seconds"], s["seed"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xferlab.reporting.calibration", description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=2000)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--procedures", nargs="+", choices=list(PROCEDURES), default=list(PROCEDURES))
    parser.add_argument("--proteins", type=int, default=100_000,
                        help="simulated proteins per class for the truth (Monte Carlo)")
    parser.add_argument("--out", type=Path, default=Path("docs/calibration.md"))
    parser.add_argument("--record", type=Path, default=None,
                        help="also save the summary the page is written from (JSON; docs/bench/calibration-<date>.json)")
    args = parser.parse_args(argv)
    from xferlab.runtime.provenance import git_revision

    start, revision = time.time(), git_revision()  # the code that runs, read before the tree can change
    design = Design()
    results = simulate(args.experiments, {p: PROCEDURES[p] for p in args.procedures}, args.bootstrap, design,
                       args.seed, proteins_per_class=args.proteins, progress=lambda i: print(f"\r{i + 1}/{args.experiments}", end="", file=sys.stderr))
    print(file=sys.stderr)
    rec = record(summary(results), design, args.experiments, args.bootstrap, time.time() - start, args.seed,
                 args.proteins, revision)
    text = page(rec)
    if args.record is not None:
        from xferlab.runtime.io import atomic_write_json

        atomic_write_json(args.record, rec)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
