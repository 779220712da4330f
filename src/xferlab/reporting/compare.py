"""Paired differences between conditions and per-class intervals, from one shared bootstrap over
test proteins (`reporting.stats`).

Comparisons are chosen up front, never after looking at the results: every condition against a
named reference (`report.reference`, e.g. the `random` control) and, with `report.pairs=all`,
every pair of conditions. Where the sweep varied settings besides the condition keys
(`reporting.conditions`, e.g. `dataset.mode` in `experiment=paper`), conditions are compared
within the same settings: each against the reference of its own settings (`report.reference`
names a condition by its condition keys, `hpa`, or in full, `hpa, mode=fov`), and every pair of
the same settings; `pairs=all` adds the pairs that differ in one setting only (`hpa, mode=crops`
against `hpa, mode=fov`). Never a pair that differs in a setting and something else: what would
its difference measure? Each gives the difference in macro F1 with its 95 % paired interval (BCa
on draws shared by both conditions, `reporting.intervals`) and the bootstrap p-value that matches
it (below 0.05 exactly when the interval leaves 0 out); the p-values of one experiment and level
(crops, proteins) are corrected together (Holm), and each comparison gets a verdict line the
README can quote.
"""

from __future__ import annotations

from itertools import combinations
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from xferlab.reporting.stats import (LEVELS, Bootstrap, Condition, bootstrap_p, condition_counts, holm, interval,
                                     read_predictions, units, verdict)
from xferlab.reporting.tables import usable_predictions

PAIRS = ("all", "none")


def classes_of(table: pd.DataFrame) -> list[str]:
    """The class names of a predictions table (its `score/<class>` columns; older files without
    them: the class indices seen)."""
    named = [c.split("/", 1)[1] for c in table.columns if c.startswith("score/")]
    if named:
        return named
    return [str(k) for k in range(int(max(table["label"].max(), table["pred"].max())) + 1)]


def prepare(table: pd.DataFrame, n_boot: int) -> tuple[Bootstrap | None, dict[str, Condition], str | None]:
    """Per-target counts of every condition whose runs all have usable single-label predictions,
    and the draws they share. Returns (bootstrap, conditions, why there is none).

    Multilabel runs get no bootstrap: the draws are made within each test protein's class, and a
    multilabel protein has no single class. Drawing within label sets instead would leave most
    sets with one protein (strata that cannot vary), and drawing regardless of labels is what
    made the single-label intervals off-centre (`reporting.stats`)."""
    if not n_boot:
        return None, {}, "the bootstrap is off (--bootstrap 0)"
    conditions = {}
    for _, r in table.iterrows():
        runs = r["_runs"]
        if not usable_predictions(runs).all():
            continue
        first = read_predictions(runs["run_dir"].iloc[0])
        if "preds" in first.columns:  # multilabel runs carry label sets
            return None, {}, "the bootstrap over test proteins covers single-label runs; these are multilabel"
        conditions[r["condition"]] = condition_counts(r["condition"], runs, len(classes_of(first)))
    if not conditions:
        return None, {}, "no condition has usable predictions"
    return Bootstrap(list(conditions.values()), n_boot), conditions, None


Strata = Mapping[str, tuple[str, tuple]]  # condition -> (its condition keys' name, its settings ((key, value), ...))


def strata_of(table: pd.DataFrame) -> Strata:
    """Each condition's condition-key name and settings (`tables.experiment_table`'s `_base`, `_setting`)."""
    if "_setting" not in table.columns:
        return {n: (n, ()) for n in table["condition"]}
    return {r["condition"]: (r["_base"], tuple(r["_setting"])) for _, r in table.iterrows()}


def reference_of(name: str, names: Sequence[str], reference: str, strata: Strata) -> str | None:
    """The condition `name` is compared with: the one of its settings that `reference` names."""
    return next((r for r in names if strata[r][1] == strata[name][1] and reference in (r, strata[r][0])), None)


def planned(names: Sequence[str], reference: str | None, pairs: str,
            strata: Strata | None = None) -> list[tuple[str, str]]:
    """The comparisons, in table order: (other, reference) for every other condition of the
    reference's settings, then (with `pairs=all`) every remaining pair of the same settings or
    of the same condition keys and settings that differ in one key (module docstring)."""
    if pairs not in PAIRS:
        raise ValueError(f"report.pairs={pairs!r}; choose one of {PAIRS}")
    strata = strata or {n: (n, ()) for n in names}
    chosen = []
    for other in names if reference is not None else []:
        ref = reference_of(other, names, reference, strata)
        if ref is not None and ref != other:
            chosen.append((other, ref))

    def comparable(a: str, b: str) -> bool:
        (base_a, set_a), (base_b, set_b) = strata[a], strata[b]
        return set_a == set_b or (base_a == base_b and sum(x != y for x, y in zip(set_a, set_b)) == 1)

    if pairs == "all":
        chosen += [(a, b) for a, b in combinations(names, 2)
                   if comparable(a, b) and (a, b) not in chosen and (b, a) not in chosen]
    return chosen


def without_reference(names: Sequence[str], reference: str, strata: Strata) -> list[str]:
    """The conditions that `reference` names none of, among those of their own settings."""
    return [n for n in names if reference_of(n, names, reference, strata) is None]


def comparisons(table: pd.DataFrame, boot: Bootstrap, conditions: dict[str, Condition], reference: str | None,
                pairs: str, average_over: str, method: str = "bca") -> pd.DataFrame:
    """One row per (comparison, level): the difference in macro F1 (first minus second) over the
    units both have, its paired 95 % interval, bootstrap p and Holm-corrected p, and the verdict.
    `method`: the interval (`reporting.intervals.METHODS`); the p-value inverts the same interval."""
    names = [n for n in table["condition"] if n in conditions]
    rows = []
    for a, b in planned(names, reference, pairs, strata_of(table)):
        runs = {n: table.set_index("condition").loc[n, "_runs"] for n in (a, b)}
        common = sorted(set(units(runs[a])) & set(units(runs[b])))
        if not common:
            continue
        for level in LEVELS:
            if not (conditions[a].counts[level] and conditions[b].counts[level]):
                continue
            diff = (boot.replicates(conditions[a], "macro_f1", level, average_over, common)
                    - boot.replicates(conditions[b], "macro_f1", level, average_over, common))
            metric = "test/macro_f1" if level == "crop" else "test/protein_macro_f1"
            observed = float(np.mean([_value(runs[a], u, metric) - _value(runs[b], u, metric) for u in common]))
            lo, hi = interval(diff, method=method)
            rows.append({"a": a, "b": b, "level": level, "n_units": len(common), "diff": observed,
                         "ci_low": float(lo), "ci_high": float(hi), "p": bootstrap_p(diff, method=method)})
    out = pd.DataFrame(rows, columns=["a", "b", "level", "n_units", "diff", "ci_low", "ci_high", "p"])
    out["p_holm"] = np.nan
    for level, group in out.groupby("level"):
        out.loc[group.index, "p_holm"] = holm(group["p"].to_numpy())
    out["verdict"] = [verdict(r.a, r.b, r.diff, r.ci_low, r.ci_high, r.p_holm) for r in out.itertuples()]
    return out


def _value(runs: pd.DataFrame, unit: tuple[int, int, int], metric: str) -> float:
    return float(runs.loc[units(runs) == unit, metric].mean())


def per_class_intervals(table: pd.DataFrame, boot: Bootstrap, conditions: dict[str, Condition], classes: list[str],
                        average_over: str, method: str = "bca") -> pd.DataFrame:
    """Per condition and class: mean test F1 over units (per crop), its 95 % interval over test
    proteins (`method`, each class on its own), and the number of test proteins of the class (mean
    over splits)."""
    rows = []
    for name, c in conditions.items():
        runs = table.set_index("condition").loc[name, "_runs"]
        lo, hi = interval(boot.replicates(c, "f1", "crop", average_over), method=method)
        proteins = np.mean([((tc.tp + tc.fn) > 0).sum(axis=0) for tc in c.counts["crop"].values()], axis=0)
        for k, cls in enumerate(classes):
            column = f"test/f1/{cls}"
            rows.append({"condition": name, "class": cls,
                         "f1": float(runs[column].mean()) if column in runs else float("nan"),
                         "ci_low": float(lo[k]), "ci_high": float(hi[k]), "test_proteins": float(proteins[k])})
    return pd.DataFrame(rows)
