"""Build a report from sweep directories: tables (Markdown, CSV, LaTeX), paired tests against the
best condition, a bootstrap over test targets, confusion summary and figures."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from xferlab.runtime.io import atomic_write_text
from xferlab.reporting import plots
from xferlab.reporting.aggregate import CONDITION_KEYS, METRICS, scan_runs
from xferlab.reporting.confusion import confusion_from_runs, top_confusions
from xferlab.reporting.consistency import flag_inconsistent
from xferlab.reporting.stats import bootstrap_targets, mean_ci, paired_tests



def condition_columns(runs: pd.DataFrame) -> list[str]:
    return [c for c in CONDITION_KEYS if c in runs.columns and runs[c].notna().any()]


def naming_keys(runs: pd.DataFrame, keys: list[str]) -> list[str]:
    """The condition keys that name a condition: those that vary, less any that another naming key
    already determines (e.g. `features` when only `pixels` differs in it from the other backbones)."""
    varying = [k for k in keys if runs[k].nunique(dropna=False) > 1]
    for k in reversed(list(varying)):  # the keys listed first (backbone before features) are kept
        others = [o for o in varying if o != k]
        if others and (runs.groupby(others, dropna=False)[k].nunique(dropna=False) <= 1).all():
            varying.remove(k)
    return varying or ["backbone"]


def experiment_table(runs: pd.DataFrame, n_boot: int) -> pd.DataFrame:
    keys = condition_columns(runs)
    varying = naming_keys(runs, keys)
    rows = []
    for key, group in runs.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys, key))
        row["condition"] = "-".join(str(row[k]) for k in varying if pd.notna(row[k]) and row[k] != "")
        row["n_seeds"] = int(group["seed"].nunique())
        for m in METRICS:  # a metric a run predates is missing for it (NaN), not a reason to drop the run
            v = group[m].dropna().to_numpy(float) if m in group else np.array([])
            row[f"{m}/mean"] = float(v.mean()) if len(v) else float("nan")
            row[f"{m}/std"] = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
            row[f"{m}/ci_low"], row[f"{m}/ci_high"] = mean_ci(v)
        if n_boot and usable_predictions(group).all():
            row["test/macro_f1/boot_low"], row["test/macro_f1/boot_high"] = bootstrap_targets(
                group["run_dir"], n_boot, average_over=str(group["macro_f1_average_over"].iloc[0]))
        row["_runs"] = group
        rows.append(row)
    table = pd.DataFrame(rows).sort_values("test/macro_f1/mean", ascending=False, kind="stable").reset_index(drop=True)
    best = table.loc[0, "_runs"].set_index("seed")["test/macro_f1"]
    for i, r in table.iterrows():
        tests = paired_tests(best, r["_runs"].set_index("seed")["test/macro_f1"]) if i else {}
        for k in ("mean_diff", "t_test_p", "wilcoxon_p"):
            table.loc[i, f"vs_best/{k}"] = tests.get(k, np.nan)
    return table


def usable_predictions(runs: pd.DataFrame) -> pd.Series:
    """Which runs have a usable predictions.csv (see `aggregate.predictions_problem`)."""
    if "predictions_problem" not in runs.columns:
        return runs["run_dir"].map(lambda d: (Path(d) / "predictions.csv").exists())
    return runs["predictions_problem"].isna()


def fmt(mean: float, std: float) -> str:
    if not np.isfinite(mean):
        return "–"  # runs from before the metric existed
    return f"{mean:.4f} ± {std:.4f}" if np.isfinite(std) else f"{mean:.4f}"


def label(metric: str) -> str:
    """`test/balanced_accuracy` -> `balanced accuracy`."""
    return metric.split("/", 1)[1].replace("_", " ")


OTHER_METRICS = [m for m in METRICS if m != "test/macro_f1"]


def markdown(table: pd.DataFrame) -> str:
    head = ["condition", "n", "macro F1", "95% CI (seeds)", "95% CI (test targets)",
            *(label(m) for m in OTHER_METRICS), "Δ vs best", "p (t / Wilcoxon)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in table.iterrows():
        boot = (f"[{r['test/macro_f1/boot_low']:.4f}, {r['test/macro_f1/boot_high']:.4f}]"
                if "test/macro_f1/boot_low" in r and pd.notna(r.get("test/macro_f1/boot_low")) else "")
        ci = (f"[{r['test/macro_f1/ci_low']:.4f}, {r['test/macro_f1/ci_high']:.4f}]"
              if np.isfinite(r["test/macro_f1/ci_low"]) else "")
        diff = "best" if i == 0 else f"{r['vs_best/mean_diff']:+.4f}"
        untested = i == 0 or (np.isnan(r["vs_best/t_test_p"]) and np.isnan(r["vs_best/wilcoxon_p"]))
        p = "" if untested else f"{r['vs_best/t_test_p']:.3g} / {r['vs_best/wilcoxon_p']:.3g}"  # blank: < 2 paired seeds
        lines.append("| " + " | ".join([r["condition"], str(r["n_seeds"]),
                                        fmt(r["test/macro_f1/mean"], r["test/macro_f1/std"]), ci, boot,
                                        *(fmt(r[f"{m}/mean"], r[f"{m}/std"]) for m in OTHER_METRICS),
                                        diff, p]) + " |")
    return "\n".join(lines)


def latex(table: pd.DataFrame, experiment: str) -> str:
    def cell(r, m: str) -> str:
        if not np.isfinite(r[f"{m}/mean"]):
            return "--"
        return f"${r[f'{m}/mean']:.4f} \\pm {np.nan_to_num(r[f'{m}/std']):.4f}$"

    columns = ["Macro F1", *(label(m).capitalize() for m in OTHER_METRICS)]
    lines = [r"\begin{tabular}{lr" + "r" * len(columns) + "}", r"\toprule",
             "Condition & $n$ & " + " & ".join(columns) + r" \\", r"\midrule"]
    for _, r in table.iterrows():
        name = r["condition"].replace("_", r"\_")
        lines.append(f"{name} & {r['n_seeds']} & " + " & ".join(cell(r, m) for m in METRICS) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", f"% experiment: {experiment.replace('_', ' ')}"]
    return "\n".join(lines) + "\n"


def build_report(dirs: Sequence[Path], out: Path, n_boot: int = 200) -> str:
    """Tables and figures of every experiment under `dirs`. A job whose metrics.json is missing or
    broken is left out and named (with the reason, also in `<out>/left_out.txt`); one whose
    predictions.csv is missing or broken counts in the tables but not in the interval over test
    targets nor in the confusion matrix, and is named too."""
    runs, problems = scan_runs(dirs)
    text = []
    if problems:
        lines = [f"- {d}: {why}" for d, why in problems]
        text.append(f"{len(problems)} job(s) left out of the report:\n" + "\n".join(lines))
        atomic_write_text(out / "left_out.txt", "\n".join(lines) + "\n")
    if not len(runs):
        raise FileNotFoundError(f"no finished job under {[str(d) for d in dirs]}" +
                                ("".join(f"\n  {d}: {why}" for d, why in problems) or ": no metrics.json there"))
    broken = runs[~usable_predictions(runs)]
    if len(broken):
        lines = [f"- {d}: {why}; its scores count in the tables, but not in the 95% CI over test targets "
                 "(left empty for its condition) nor in the confusion matrix"
                 for d, why in zip(broken["run_dir"], broken["predictions_problem"])]
        text.append("job(s) with unusable predictions:\n" + "\n".join(lines))
    runs, flagged = flag_inconsistent(runs)
    for experiment, group in runs.groupby("experiment", sort=False):
        table = experiment_table(group, n_boot)
        folder = out / str(experiment)
        md = markdown(table)
        export = table.drop(columns=["_runs"])
        atomic_write_text(folder / "summary.csv", export.to_csv(index=False))
        atomic_write_text(folder / "summary.md", md + "\n")
        atomic_write_text(folder / "summary.tex", latex(table, str(experiment)))
        plots.bar_chart(table, "condition", folder / "bar_macro_f1.png")
        per_class = per_class_f1(table)
        if per_class is not None:
            plots.heat_map(per_class, folder / "per_class_f1.png", "test F1 per class (mean over seeds)")
        averaging = ", ".join(f"{a} classes" for a in sorted(group["macro_f1_average_over"].unique()))
        text.append(f"## {experiment}: test macro F1 over seeds ({len(group)} jobs; macro F1 over {averaging}, "
                    f"metrics.average_over)\n\n{md}")
        best = table.loc[0, "_runs"]
        best_runs = best.loc[usable_predictions(best), "run_dir"]
        if len(best_runs):
            matrix = confusion_from_runs(best_runs)
            atomic_write_text(folder / "confusion_best.csv", matrix.to_csv())
            plots.heat_map(matrix, folder / "confusion_best.png", f"confusion, {table.loc[0, 'condition']} (rows: true)")
            pairs = "\n".join(f"  {t:>18} -> {p:<18} {s:.2f}" for t, p, s in top_confusions(matrix))
            text.append(f"most confused classes of the best condition ({table.loc[0, 'condition']}):\n{pairs}")
        if "label_fraction" in group.columns and group["label_fraction"].nunique() > 1:
            plots.curve(group, "label_fraction", "backbone", folder / "macro_f1_vs_label_fraction.png", log_x=True)
        knn_cols = [c for c in group.columns if c.startswith("knn/k=") and c.endswith("/test/macro_f1")]
        if knn_cols:
            long = group[["backbone", *knn_cols]].melt(id_vars=["backbone"], value_vars=knn_cols, var_name="k",
                                                       value_name="test/macro_f1")
            long["k"] = long["k"].str.extract(r"k=(\d+)/")[0].astype(int)
            plots.curve(long, "k", "backbone", folder / "macro_f1_vs_k.png", log_x=True)
            curve = long.pivot_table(index="backbone", columns="k", values="test/macro_f1", aggfunc="mean")
            atomic_write_text(folder / "knn_macro_f1_by_k.csv", curve.to_csv())
            text.append("kNN test macro F1 by k:\n" + curve.round(4).to_string())
    if len(flagged):
        lines = [f"- {d}: {r}" for d, r in zip(flagged["run_dir"], flagged["reason"])]
        text.append("flagged and left out (their config differs beyond the swept keys):\n" + "\n".join(lines))
        atomic_write_text(out / "flagged.txt", "\n".join(lines) + "\n")
    return "\n\n".join(text)


def per_class_f1(table: pd.DataFrame) -> pd.DataFrame | None:
    rows = {}
    for _, r in table.iterrows():
        cols = [c for c in r["_runs"].columns if c.startswith("test/f1/")]
        if not cols:
            return None
        rows[r["condition"]] = r["_runs"][cols].mean().rename(lambda c: c.split("/", 2)[2])
    return pd.DataFrame(rows).T
