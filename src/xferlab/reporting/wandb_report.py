"""A sweep as a W&B report, built with wandb-workspaces (`wandb_workspaces.reports.v2`): test macro
F1 per backbone with its spread over units, the per-class F1, the runs grouped by experiment and
backbone, and the report folder's tables and paired-difference verdicts as text.

Everything comes from local files: the jobs' `metrics.json` and W&B run folders (the run ids pick
exactly this sweep's runs), and `<sweep>/report/<experiment>/` written by `python -m xferlab.report`.
Nothing here talks to a server; `xferlab.dashboard` publishes or writes the definition."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from xferlab.runtime.loggers import BACKBONE_KEY

RUN_FOLDER = re.compile(r"^(?:offline-)?run-\d{8}_\d{6}-(?P<id>[a-z0-9]+)$")
METRIC = "test/macro_f1"
PROTEIN_METRIC = "test/protein_macro_f1"
PER_CLASS_TABLE = "test/per_class_f1"  # the W&B table every run logs (`run_folder.mirror_to_wandb`)


@dataclass
class SweepRuns:
    """What the report needs to know about a sweep's jobs."""

    sweep: Path
    experiment: str
    project: str
    entity: str | None
    run_ids: list[str] = field(default_factory=list)
    backbones: list[str] = field(default_factory=list)
    jobs: int = 0
    without_wandb: list[str] = field(default_factory=list)


def wandb_run_ids(job: Path) -> list[str]:
    """The W&B run ids of a job folder (`wandb/offline-run-<time>-<id>`, or `run-...` once online)."""
    folder = job / "wandb"
    return sorted(m["id"] for p in folder.glob("*run-*") if p.is_dir() and (m := RUN_FOLDER.match(p.name)))


def sweep_runs(sweep: Path) -> SweepRuns:
    """The finished jobs of `sweep` (a sweep folder, or one run folder): their experiment, W&B
    project and run ids. An error names what is missing."""
    sweep = Path(sweep)
    jobs = sorted(p.parent for p in sweep.glob("*/metrics.json")) or ([sweep] if (sweep / "metrics.json").is_file() else [])
    if not jobs:
        raise FileNotFoundError(f"{sweep}: no finished job (no */metrics.json); give a sweep folder, "
                                "e.g. outputs/sweeps/demo/latest")
    metrics = [json.loads((job / "metrics.json").read_text()) for job in jobs]
    experiments = sorted({m.get("experiment", "default") for m in metrics})
    if len(experiments) > 1:
        raise ValueError(f"{sweep} holds runs of several experiments ({', '.join(experiments)}); "
                         "a dashboard shows one sweep of one experiment")
    config = yaml.safe_load((jobs[0] / "config.yaml").read_text()) if (jobs[0] / "config.yaml").is_file() else {}
    logger = (config or {}).get("logger") or {}
    runs = SweepRuns(sweep=sweep, experiment=experiments[0], project=logger.get("project") or "xferlab",
                     entity=logger.get("entity"), jobs=len(jobs),
                     backbones=sorted({str(m["backbone"]) for m in metrics if "backbone" in m}))
    for job in jobs:
        ids = wandb_run_ids(job)
        runs.run_ids += ids
        if not ids:
            runs.without_wandb.append(job.name)
    return runs


def report_folder(sweep: Path, experiment: str) -> Path:
    folder = Path(sweep) / "report" / experiment
    if not (folder / "summary.md").is_file():
        raise FileNotFoundError(f"no report at {folder}: run `python -m xferlab.report {sweep}` first (it writes the "
                                "tables and verdicts the dashboard quotes)")
    return folder


def per_class_markdown(path: Path) -> str:
    """`per_class_f1.csv` as a class x condition table of `F1 [low, high]`."""
    table = pd.read_csv(path)
    conditions = list(dict.fromkeys(table["condition"]))
    lines = ["| class | " + " | ".join(conditions) + " |", "|---" * (len(conditions) + 1) + "|"]
    for name, rows in table.groupby("class", sort=True):
        by = rows.set_index("condition")
        cells = [f"{by.at[c, 'f1']:.3f} [{by.at[c, 'ci_low']:.3f}, {by.at[c, 'ci_high']:.3f}]"
                 if c in by.index and pd.notna(by.at[c, "ci_low"]) else
                 (f"{by.at[c, 'f1']:.3f}" if c in by.index else "–") for c in conditions]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_filter(runs: SweepRuns):
    """This sweep's runs: its experiment's W&B group and, when the jobs have W&B folders, their ids."""
    from wandb_workspaces import expr

    filters = [expr.Metric("Group") == runs.experiment]
    if runs.run_ids:
        filters.append(expr.Metric("ID").isin(runs.run_ids))
    return filters


def build(sweep: Path, entity: str | None = None, project: str | None = None):
    """The W&B report of `sweep` as a `wandb_workspaces.reports.v2.Report`. `entity` and `project`
    name where it is published; the run sets get them only when publishing (`for_server`), as
    turning run sets into W&B's format asks the server for the project."""
    import wandb_workspaces.reports.v2 as wr

    runs = sweep_runs(sweep)
    folder = report_folder(sweep, runs.experiment)
    name = Path(sweep).resolve().name  # the sweep's own name, not that of a `latest` link to it
    text = {name: (folder / name).read_text() if (folder / name).is_file() else ""
            for name in ("summary.md", "verdicts.md", "confusions.md")}

    def runset(name: str) -> wr.Runset:
        return wr.Runset(name=name, filters=run_filter(runs), groupby=["run.group", f"config.{BACKBONE_KEY}"])

    def bars(metric: str, title: str) -> wr.BarPlot:
        return wr.BarPlot(title=title, metrics=[metric], groupby=wr.Config(BACKBONE_KEY), groupby_aggfunc="mean",
                          groupby_rangefunc="stddev", orientation="h", title_x=metric, title_y="backbone")

    blocks = [
        wr.P(f"Sweep {name} of experiment {runs.experiment}: {runs.jobs} jobs, "
             f"{len(runs.backbones)} backbones ({', '.join(runs.backbones)}). Bars: mean over the runs of a "
             "backbone, whiskers one standard deviation over its units (splits, seeds, pretraining seeds). "
             "The intervals over test proteins and the paired verdicts below come from `python -m "
             "xferlab.report`, which computed them from the same runs' files."),
        wr.H2("Test macro F1 per backbone"),
        wr.PanelGrid(runsets=[runset(f"{runs.experiment}: {name}")], panels=[
            bars(METRIC, "test macro F1 per backbone (crops), mean ± sd over units"),
            bars(PROTEIN_METRIC, "test macro F1 per backbone (proteins), mean ± sd over units"),
        ]),
        wr.H2("The report's table"),
        wr.MarkdownBlock(text=text["summary.md"]),
        wr.H2("Paired differences"),
        wr.MarkdownBlock(text=text["verdicts.md"] or "No planned comparison (report.reference / report.pairs)."),
        wr.H2("Per-class F1"),
    ]
    if (folder / "per_class_f1.csv").is_file():
        blocks.append(wr.MarkdownBlock(text="F1 per class and condition with its 95 % interval over test proteins:\n\n"
                                            + per_class_markdown(folder / "per_class_f1.csv")))
    blocks += [
        wr.PanelGrid(runsets=[runset("per-class F1 of each run")],
                     panels=[wr.WeavePanelSummaryTable(table_name=PER_CLASS_TABLE)]),
        wr.H2("Runs by experiment and backbone"),
        wr.PanelGrid(runsets=[runset("runs")], panels=[wr.RunComparer(diff_only="split")]),
    ]
    if text["confusions.md"]:
        blocks += [wr.H2("Largest confusions"), wr.MarkdownBlock(text=text["confusions.md"])]
    report = wr.Report(entity=entity or runs.entity or "", project=project or runs.project,
                       title=f"xferlab: {runs.experiment} ({name})"[:128],
                       description=f"Which backbone transfers best: {runs.experiment}, {runs.jobs} runs", blocks=blocks)
    return report, runs


def for_server(report, entity: str, project: str):
    """`report` with its run sets pointed at `entity/project` (needed to publish it)."""
    import wandb_workspaces.reports.v2 as wr

    report.entity, report.project = entity, project
    for block in report.blocks:
        if isinstance(block, wr.PanelGrid):
            for runset in block.runsets:
                runset.entity, runset.project = entity, project
    return report


def definition(report) -> dict:
    """The report as W&B stores it (its view spec), without asking a server."""
    return json.loads(report._to_model().model_dump_json(by_alias=True, exclude_none=True))
