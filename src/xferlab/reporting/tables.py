"""One row per condition of an experiment: mean ± std over its units `(split_seed, seed, pretrain_seed)` of every
test metric (per crop and per protein), with bootstrap intervals over test proteins for macro F1;
as Markdown, CSV and LaTeX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from xferlab.reporting.aggregate import METRICS
from xferlab.reporting.conditions import Naming, naming
from xferlab.reporting.stats import Bootstrap, Condition, interval, units

PRIMARY = {"crop": "test/macro_f1", "protein": "test/protein_macro_f1"}


def pretraining_spread(group: pd.DataFrame, metric: str = "test/macro_f1") -> float:
    """The std over pretraining seeds of a condition's per-seed mean `metric` (NaN with fewer than
    two): the spread that pretraining itself adds, beside the head's and the split's."""
    if "pretrain_seed" not in group or group["pretrain_seed"].nunique() < 2:
        return float("nan")
    return float(group.groupby("pretrain_seed")[metric].mean().std(ddof=1))


def usable_predictions(runs: pd.DataFrame) -> pd.Series:
    """Which runs have a usable predictions.csv (see `aggregate.predictions_problem`)."""
    if "predictions_problem" not in runs.columns:
        return runs["run_dir"].map(lambda d: (Path(d) / "predictions.csv").exists())
    return runs["predictions_problem"].isna()


def experiment_table(runs: pd.DataFrame, named: tuple[pd.DataFrame, Naming] | None = None) -> pd.DataFrame:
    """One row per condition of one experiment's runs (`reporting.conditions`: its condition keys
    and settings, its name), best first (by crop macro F1); `add_intervals` adds the bootstrap
    intervals. Hidden columns (`_`): the condition's runs, the condition keys' part of its name
    (`_base`) and its settings (`_setting`), which the comparisons pair by. `named`: the runs as
    `conditions.naming` returns them, when the caller has them."""
    runs, how = named or naming(runs)
    keys = how.keys
    rows = []
    for key, group in runs.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys, key))
        row["condition"] = how.name(row)
        row["_base"], row["_setting"] = how.base_name(row), how.setting(row)
        row["n_units"] = int(units(group).nunique())
        row["n_splits"] = int(group["split_seed"].nunique()) if "split_seed" in group else 1
        row["n_pretrain"] = int(group["pretrain_seed"].nunique()) if "pretrain_seed" in group else 1
        row["pretrain_std"] = pretraining_spread(group)
        for m in METRICS:  # a metric a run predates is missing for it (NaN), not a reason to drop the run
            v = group[m].dropna().to_numpy(float) if m in group else np.array([])
            row[f"{m}/mean"] = float(v.mean()) if len(v) else float("nan")
            row[f"{m}/std"] = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
        row["_runs"] = group
        rows.append(row)
    table = pd.DataFrame(rows)
    twins = table[table["condition"].duplicated(keep=False)]
    if len(twins):
        raise ValueError(f"conditions {sorted(set(twins['condition']))} share a name but differ in "
                         f"{[k for k in keys if twins[k].astype(str).nunique() > 1]}, which has no value in some of "
                         "their runs' metrics.json; report those runs separately")
    return table.sort_values("test/macro_f1/mean", ascending=False, kind="stable").reset_index(drop=True)


def add_intervals(table: pd.DataFrame, boot: Bootstrap, conditions: dict[str, Condition],
                  method: str = "bca") -> pd.DataFrame:
    """95 % intervals over test proteins of crop and protein macro F1 (`<metric>/boot_low`,
    `/boot_high`; BCa unless `method` says otherwise, `reporting.intervals`) for the conditions
    `compare.prepare` found usable."""
    for i, r in table.iterrows():
        c = conditions.get(r["condition"])
        for level, m in PRIMARY.items():
            if c is not None and c.counts[level]:
                average_over = str(r.get("macro_f1_average_over", "present"))
                lo, hi = interval(boot.replicates(c, "macro_f1", level, average_over), method=method)
                table.loc[i, f"{m}/boot_low"], table.loc[i, f"{m}/boot_high"] = float(lo), float(hi)
    return table


def fmt(mean: float, std: float) -> str:
    if not np.isfinite(mean):
        return "–"  # runs from before the metric existed
    return f"{mean:.4f} ± {std:.4f}" if np.isfinite(std) else f"{mean:.4f}"


def label(metric: str) -> str:
    """`test/protein_balanced_accuracy` -> `protein balanced accuracy`."""
    return metric.split("/", 1)[1].replace("_", " ")


def ci(r: pd.Series, metric: str) -> str:
    lo, hi = r.get(f"{metric}/boot_low"), r.get(f"{metric}/boot_high")
    return f"[{lo:.4f}, {hi:.4f}]" if lo is not None and pd.notna(lo) else ""


OTHER = [m for m in METRICS if m not in PRIMARY.values()]


def markdown(table: pd.DataFrame) -> str:
    """The table as Markdown; a metric no condition has (multilabel ones on single-label runs) is left out."""
    other = [m for m in OTHER if np.isfinite(table[f"{m}/mean"].to_numpy(float)).any()]
    spread = "n_pretrain" in table and (table["n_pretrain"] > 1).any()
    head = ["condition", "n", "macro F1 (crops)", "95% CI (test proteins)",
            *(["sd over pretraining seeds"] if spread else []), "macro F1 (proteins)", "95% CI (test proteins)",
            *(label(m) for m in other)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        parts = [f"{r['n_splits']} splits" if r["n_splits"] > 1 else "",
                 f"{r['n_pretrain']} pretrainings" if r.get("n_pretrain", 1) > 1 else ""]
        n = f"{r['n_units']}" + (f" ({', '.join(p for p in parts if p)})" if any(parts) else "")
        cells = [r["condition"], n]
        for m in PRIMARY.values():
            cells += [fmt(r[f"{m}/mean"], r[f"{m}/std"]), ci(r, m)]
            if spread and m == PRIMARY["crop"]:
                cells.append(f"{r['pretrain_std']:.4f}" if np.isfinite(r["pretrain_std"]) else "–")
        cells += [fmt(r[f"{m}/mean"], r[f"{m}/std"]) for m in other]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def latex(table: pd.DataFrame, experiment: str) -> str:
    def cell(r, m: str) -> str:
        if not np.isfinite(r[f"{m}/mean"]):
            return "--"
        text = f"${r[f'{m}/mean']:.4f} \\pm {np.nan_to_num(r[f'{m}/std']):.4f}$"
        lo, hi = r.get(f"{m}/boot_low"), r.get(f"{m}/boot_high")
        return text + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and pd.notna(lo) else "")

    shown = [*PRIMARY.values(), "test/accuracy", "test/balanced_accuracy"]
    columns = ["Macro F1 (crops)", "Macro F1 (proteins)", "Accuracy", "Balanced accuracy"]
    lines = [r"\begin{tabular}{lr" + "r" * len(columns) + "}", r"\toprule",
             "Condition & $n$ & " + " & ".join(columns) + r" \\", r"\midrule"]
    for _, r in table.iterrows():
        name = r["condition"].replace("_", r"\_")
        lines.append(f"{name} & {r['n_units']} & " + " & ".join(cell(r, m) for m in shown) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}",
              f"% experiment: {experiment.replace('_', ' ')}; mean $\\pm$ std over (split, seed, pretraining seed) units, "
              "[95% bootstrap interval over test proteins]"]
    return "\n".join(lines) + "\n"


def comparisons_latex(compared: pd.DataFrame, experiment: str) -> str:
    """The planned comparisons: difference in macro F1, paired 95 % interval, Holm-corrected p."""
    lines = [r"\begin{tabular}{llrrr}", r"\toprule",
             r"Comparison & Level & $\Delta$ macro F1 & 95\% interval & Holm $p$ \\", r"\midrule"]
    for r in compared.itertuples():
        name = f"{r.a} vs {r.b}".replace("_", r"\_")
        lines.append(f"{name} & {r.level} & ${r.diff:+.4f}$ & $[{r.ci_low:+.4f}, {r.ci_high:+.4f}]$ & {r.p_holm:.3g} \\\\")
    lines += [r"\bottomrule", r"\end{tabular}",
              f"% experiment: {experiment.replace('_', ' ')}; paired bootstrap over test proteins, Holm-corrected per level"]
    return "\n".join(lines) + "\n"
