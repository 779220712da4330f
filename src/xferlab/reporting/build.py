"""Build a report from sweep directories: per experiment, a table of every condition (mean ± std
over (split, seed, pretraining seed) units, per crop and per protein, with intervals over test proteins), the
planned paired comparisons with Holm-corrected p-values and their verdict lines, per-class F1
with intervals, the confusion of the best condition, and figures."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
import yaml

from xferlab.reporting import plots
from xferlab.reporting.aggregate import scan_runs
from xferlab.reporting.compare import (classes_of, comparisons, per_class_intervals, prepare, strata_of,
                                       without_reference)
from xferlab.reporting.conditions import naming
from xferlab.reporting.confusion import confusion_from_runs, top_confusions
from xferlab.reporting.consistency import flag_inconsistent
from xferlab.reporting.cost import cost_markdown, job_costs
from xferlab.reporting.stats import read_predictions
from xferlab.reporting.samples import samples_per_target
from xferlab.reporting.embedding_map import condition_maps
from xferlab.reporting.tables import (add_intervals, comparisons_latex, experiment_table, latex, markdown,
                                      usable_predictions)
from xferlab.runtime.io import atomic_write_text
from xferlab.checks.preflight import NOT_RUN_FILE
from xferlab.runtime.progress import bar

DEFAULT_BOOTSTRAP = 2000


def report_settings(runs: pd.DataFrame, reference: str | None, pairs: str | None) -> tuple[str | None, str]:
    """The comparisons an experiment planned (`report.reference`, `report.pairs` in its runs'
    config), unless given here."""
    planned: dict = {}
    config = Path(runs["run_dir"].iloc[0]) / "config.yaml"
    if config.exists():
        planned = (yaml.safe_load(config.read_text()) or {}).get("report") or {}
    return (reference if reference is not None else planned.get("reference"),
            pairs if pairs is not None else planned.get("pairs", "all"))


def confusion_matrices(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each condition's confusion matrix pooled over its runs with usable predictions."""
    out = {}
    for _, r in table.iterrows():
        runs = r["_runs"].loc[usable_predictions(r["_runs"]), "run_dir"]
        if len(runs):
            out[r["condition"]] = confusion_from_runs(runs)
    return out


def confusions_markdown(matrices: dict[str, pd.DataFrame], n: int = 5) -> str:
    """Per condition, its `n` largest confusions (share of the true class's test crops predicted as
    the other class)."""
    lines = ["| condition | largest confusions: true -> predicted (share of the true class) |", "|---|---|"]
    for condition, matrix in matrices.items():
        pairs = top_confusions(matrix, n)
        lines.append(f"| {condition} | " + "; ".join(f"{t} -> {p} {s:.2f}" for t, p, s in pairs) + " |")
    return "\n".join(lines) + "\n"


def build_report(dirs: Sequence[Path], out: Path, n_boot: int = DEFAULT_BOOTSTRAP, reference: str | None = None,
                 pairs: str | None = None, embedding_map: str = "umap") -> str:
    """Tables and figures of every experiment under `dirs`. A job whose metrics.json is missing or
    broken is left out and named (with the reason, also in `<out>/left_out.txt`); one whose
    predictions.csv is missing or broken counts in the tables but leaves its condition without
    intervals, comparisons and confusion matrix, and is named too. Backbones the preflight left out
    of a sweep for want of weights (`not_run.txt` in the sweep folder) are listed first.
    `embedding_map`: how each condition's test embeddings are drawn in 2-D
    (`reporting.embedding_map.METHODS`)."""
    runs, problems = scan_runs(dirs)
    text = [note.read_text().strip() for note in (Path(d) / NOT_RUN_FILE for d in dirs) if note.is_file()]
    if problems:
        lines = [f"- {d}: {why}" for d, why in problems]
        text.append(f"{len(problems)} job(s) left out of the report:\n" + "\n".join(lines))
        atomic_write_text(out / "left_out.txt", "\n".join(lines) + "\n")
    if not len(runs):
        raise FileNotFoundError(f"no finished job under {[str(d) for d in dirs]}" +
                                ("".join(f"\n  {d}: {why}" for d, why in problems) or ": no metrics.json there"))
    broken = runs[~usable_predictions(runs)]
    if len(broken):
        lines = [f"- {d}: {why}; its scores count in the tables, but its condition gets no interval over test "
                 "proteins, no comparison and no confusion matrix"
                 for d, why in zip(broken["run_dir"], broken["predictions_problem"])]
        text.append("job(s) with unusable predictions:\n" + "\n".join(lines))
    runs, flagged = flag_inconsistent(runs)
    for experiment, group in runs.groupby("experiment", sort=False):
        text += experiment_report(str(experiment), group, out / str(experiment), n_boot,
                                  *report_settings(group, reference, pairs), embedding_map=embedding_map)
    if len(flagged):
        lines = [f"- {d}: {r}" for d, r in zip(flagged["run_dir"], flagged["reason"])]
        text.append("flagged and left out (their config differs beyond the swept keys):\n" + "\n".join(lines))
        atomic_write_text(out / "flagged.txt", "\n".join(lines) + "\n")
    return "\n\n".join(text)


def experiment_report(experiment: str, group: pd.DataFrame, folder: Path, n_boot: int, reference: str | None,
                      pairs: str, embedding_map: str = "umap") -> list[str]:
    with bar(None, f"report {experiment}", unit="step") as progress:
        return _experiment_report(experiment, group, folder, n_boot, reference, pairs, embedding_map, progress)


def _experiment_report(experiment: str, group: pd.DataFrame, folder: Path, n_boot: int, reference: str | None,
                       pairs: str, embedding_map: str, progress) -> list[str]:
    def step(what: str) -> None:
        progress.set_postfix_str(what, refresh=False)
        progress.update(1)

    averaging = sorted(group["macro_f1_average_over"].unique())
    average_over = averaging[0]
    group, how = naming(group)
    table = experiment_table(group, (group, how))
    step("bootstrap")
    boot, conditions, why_not = prepare(table, n_boot)
    if boot is not None:
        table = add_intervals(table, boot, conditions)
    md = markdown(table)
    atomic_write_text(folder / "summary.csv",
                      table.drop(columns=[c for c in table.columns if c.startswith("_")]).to_csv(index=False))
    atomic_write_text(folder / "summary.md", md + "\n")
    atomic_write_text(folder / "summary.tex", latex(table, experiment))
    atomic_write_text(folder / "cost.md", cost_markdown(job_costs(group["run_dir"])))
    plots.dot_chart(table, folder / "macro_f1.png")
    n_units = ", ".join(sorted({str(n) for n in table["n_units"]}))
    text = [f"## {experiment}: test macro F1, mean ± std over {n_units} (split, seed, pretraining seed) unit(s) per condition "
            f"({len(group)} jobs; macro F1 over {', '.join(averaging)} classes, metrics.average_over)\n\n{md}"]
    samples = samples_per_target(group, folder)
    if samples:
        text.append(samples)
    if how.settings:
        text.append("conditions told apart by setting(s) besides the condition keys: " +
                    ", ".join(f"{k} ({how.labels[k]}={'|'.join(sorted(group[k].unique()))})" for k in how.settings) +
                    "; each condition is compared with conditions of its own settings, and with report.pairs=all "
                    "with the same condition in one other setting")
    if boot is None:
        text.append(f"no intervals over test proteins and no comparisons: {why_not}")
    else:
        single = boot.single_protein_classes()
        if single:
            names = classes_of(read_predictions(table.loc[0, "_runs"]["run_dir"].iloc[0]))
            listed = "; ".join(f"{names[k] if k < len(names) else k} (split_seed {', '.join(map(str, s))})"
                               for k, s in sorted(single.items()))
            text.append(f"class(es) with a single test protein in a split, kept in every bootstrap draw: their "
                        f"variance is not in the intervals (docs/calibration.md): {listed}")
        strata = strata_of(table)
        if reference is not None and not any(reference in (c, strata[c][0]) for c in conditions):
            text.append(f"report.reference={reference!r} is not a condition of {experiment} "
                        f"({sorted(conditions)}); comparisons against it are left out")
            reference = None
        elif reference is not None and (alone := without_reference(list(conditions), reference, strata)):
            text.append(f"report.reference={reference!r} names no condition of the settings of {alone}; they are "
                        "compared with no reference")
        step("comparisons")
        compared = comparisons(table, boot, conditions, reference, pairs, average_over)
        atomic_write_text(folder / "comparisons.csv", compared.to_csv(index=False))
        atomic_write_text(folder / "comparisons.tex", comparisons_latex(compared, experiment))
        if len(compared):
            lines = [f"- {v}" for v in compared.loc[compared["level"] == "crop", "verdict"]]
            protein = [f"- {v}" for v in compared.loc[compared["level"] == "protein", "verdict"]]
            text.append(f"paired differences in macro F1, 95% BCa intervals from a bootstrap over test proteins drawn "
                        f"within their classes ({boot.n_boot} draws, shared by the conditions; docs/calibration.md), "
                        f"Holm-corrected over the {len(lines)} planned comparisons:\n"
                        "per crop:\n" + "\n".join(lines) + ("\nper protein:\n" + "\n".join(protein) if protein else ""))
            sections = [("per crop", lines), ("per protein", protein)]
            atomic_write_text(folder / "verdicts.md", "\n\n".join(f"**{title}**\n\n" + "\n".join(items)
                                                                 for title, items in sections if items) + "\n")
        step("per-class intervals")
        classes = classes_of(read_predictions(table.loc[0, "_runs"]["run_dir"].iloc[0]))
        per_class = per_class_intervals(table, boot, conditions, classes, average_over)
        atomic_write_text(folder / "per_class_f1.csv", per_class.to_csv(index=False))
        plots.forest(per_class, folder / "per_class_f1_forest.png")
        plots.heat_map(per_class.pivot(index="condition", columns="class", values="f1"),
                       folder / "per_class_f1.png", "test F1 per class (mean over units)", xlabel="class",
                       ylabel="condition")
    step("confusion")
    matrices = confusion_matrices(table)
    matrix = matrices.get(table.loc[0, "condition"])
    if matrix is not None:
        atomic_write_text(folder / "confusion_best.csv", matrix.to_csv())
        plots.heat_map(matrix, folder / "confusion_best.png", f"confusion, {table.loc[0, 'condition']}",
                       xlabel="predicted class", ylabel="true class")
        pairs_text = "\n".join(f"  {t:>18} -> {p:<18} {s:.2f}" for t, p, s in top_confusions(matrix))
        text.append(f"most confused classes of the best condition ({table.loc[0, 'condition']}):\n{pairs_text}")
    atomic_write_text(folder / "confusions.md", confusions_markdown(matrices))
    if embedding_map != "none":
        step(f"{embedding_map} maps")
        maps, missing = condition_maps(table, embedding_map, progress)
        if maps:
            plots.embedding_maps(maps, folder / f"embeddings_{embedding_map}.png", embedding_map)
        if missing:
            text.append(f"no {embedding_map} map of the test embeddings for:\n" + "\n".join(f"- {m}" for m in missing))
    if "label_fraction" in group.columns and group["label_fraction"].nunique() > 1:
        series = group.assign(condition=[how.name(r, leave_out=["label_fraction"]) for _, r in group.iterrows()])
        plots.curve(series, "label_fraction", "condition", folder / "macro_f1_vs_label_fraction.png", log_x=True)
    knn_cols = [c for c in group.columns if c.startswith("knn/k=") and c.endswith("/test/macro_f1")]
    if knn_cols:
        named = group.assign(condition=[how.name(r) for _, r in group.iterrows()])
        long = named[["condition", *knn_cols]].melt(id_vars=["condition"], value_vars=knn_cols, var_name="k",
                                                    value_name="test/macro_f1")
        long["k"] = long["k"].str.extract(r"k=(\d+)/")[0].astype(int)
        plots.curve(long, "k", "condition", folder / "macro_f1_vs_k.png", log_x=True)
        curve = long.pivot_table(index="condition", columns="k", values="test/macro_f1", aggfunc="mean")
        atomic_write_text(folder / "knn_macro_f1_by_k.csv", curve.to_csv())
        text.append("kNN test macro F1 by k:\n" + curve.round(4).to_string())
    return text
