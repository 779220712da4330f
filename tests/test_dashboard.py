"""`python -m xferlab.dashboard`: the W&B report of a sweep, built offline from its files (no
server, no credentials): its panels, the filters that pick exactly the sweep's runs, the report
folder's text, and the definition file with how to publish it."""

import json

import pytest
import yaml

from xferlab import dashboard
from xferlab.reporting.wandb_report import build, per_class_markdown, sweep_runs

RUNS = {"backbone=hpa,seed=0": ("hpa", "1abc2def"), "backbone=hpa,seed=1": ("hpa", "3ghi4jkl"),
        "backbone=random,seed=0": ("random", "5mno6pqr"), "backbone=random,seed=1": ("random", "7stu8vwx")}


@pytest.fixture
def sweep(tmp_path):
    """A finished sweep as a job leaves it: metrics.json, config.yaml, an offline W&B run folder,
    and the report folder `python -m xferlab.report` writes."""
    sweep = tmp_path / "outputs" / "sweeps" / "study" / "2026-12-03_10-00-00_abcdef"
    for job, (backbone, run_id) in RUNS.items():
        folder = sweep / job
        (folder / "wandb" / f"offline-run-20261203_100000-{run_id}").mkdir(parents=True)
        (folder / "wandb" / "latest-run").mkdir()
        (folder / "metrics.json").write_text(json.dumps({"experiment": "study", "backbone": backbone,
                                                         "test/macro_f1": 0.5}))
        (folder / "config.yaml").write_text(yaml.safe_dump({"logger": {"project": "myproject", "entity": "lab"}}))
    report = sweep / "report" / "study"
    report.mkdir(parents=True)
    (report / "summary.md").write_text("| condition | macro F1 |\n|---|---|\n| hpa | 0.8 |\n| random | 0.4 |\n")
    (report / "verdicts.md").write_text("**per crop**\n\n- hpa > random: +0.4000 [+0.3, +0.5], Holm p = 0.01\n")
    (report / "per_class_f1.csv").write_text(
        "condition,class,f1,ci_low,ci_high,test_proteins\nhpa,er,0.9,0.8,0.95,4\nhpa,golgi,0.5,,,1\n"
        "random,er,0.4,0.3,0.5,4\n")
    return sweep


def test_the_sweeps_runs_are_found_by_their_wandb_folders(sweep):
    runs = sweep_runs(sweep)
    assert (runs.experiment, runs.project, runs.entity, runs.jobs) == ("study", "myproject", "lab", 4)
    assert sorted(runs.run_ids) == sorted(run_id for _, run_id in RUNS.values())
    assert runs.backbones == ["hpa", "random"] and runs.without_wandb == []


def test_the_report_compares_backbones_with_their_spread_and_filters_to_the_sweeps_runs(sweep):
    import wandb_workspaces.reports.v2 as wr
    from xferlab.reporting.wandb_report import definition

    report, runs = build(sweep)
    grids = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    bars = [p for g in grids for p in g.panels if isinstance(p, wr.BarPlot)]
    assert [b.metrics for b in bars] == [["test/macro_f1"], ["test/protein_macro_f1"]]
    for bar in bars:
        assert (bar.groupby_aggfunc, bar.groupby_rangefunc) == ("mean", "stddev")
        assert bar.groupby == wr.Config("backbone_name")
    assert [p.table_name for g in grids for p in g.panels if isinstance(p, wr.WeavePanelSummaryTable)] == \
        ["test/per_class_f1"]
    assert any(isinstance(p, wr.RunComparer) for g in grids for p in g.panels)

    spec = definition(report)  # as W&B stores it, built without a server
    runsets = [rs for b in spec["spec"]["blocks"] if b["type"] == "panel-grid" for rs in b["metadata"]["runSets"]]
    assert len(runsets) == len(grids)
    for runset in runsets:
        leaves = runset["filters"]["filters"]
        assert {"key": {"section": "run", "name": "group"}, "op": "=", "value": "study", "disabled": False} in leaves
        ids = [leaf for leaf in leaves if leaf["key"] == {"section": "run", "name": "name"}]
        assert len(ids) == 1 and ids[0]["op"] == "IN" and sorted(ids[0]["value"]) == sorted(runs.run_ids)
        assert runset["grouping"] == [{"section": "run", "name": "group"},
                                      {"section": "config", "name": "backbone_name.value"}]
    text = "\n".join(b.text for b in report.blocks if isinstance(b, wr.MarkdownBlock))
    assert "hpa > random: +0.4000 [+0.3, +0.5], Holm p = 0.01" in text  # the verdicts, as text
    assert "| hpa | 0.8 |" in text and "| er | 0.900 [0.800, 0.950] | 0.400 [0.300, 0.500] |" in text


def test_per_class_f1_without_an_interval_or_a_condition_shows_what_there_is(sweep):
    table = per_class_markdown(sweep / "report" / "study" / "per_class_f1.csv")
    assert table.splitlines()[0] == "| class | hpa | random |"
    assert "| golgi | 0.500 | – |" in table


def test_offline_it_writes_the_definition_and_says_how_to_publish(sweep, capsys, monkeypatch):
    monkeypatch.setenv("XFERLAB_ROOT", str(sweep.parents[3]))
    (sweep.parent / "latest").symlink_to(sweep.name)  # as make demo leaves it
    assert dashboard.find_sweep("study") == sweep.parent / "latest"
    assert dashboard.main(["study"]) == 0  # an experiment's name: its latest sweep
    sweep = sweep.parent / "latest"
    out = capsys.readouterr().out
    written = sweep / "report" / "wandb_report.json"
    record = json.loads(written.read_text())
    assert (record["entity"], record["project"], record["experiment"]) == ("lab", "myproject", "study")
    assert sorted(record["run_ids"]) == sorted(r for _, r in RUNS.values())
    assert record["report"]["displayName"] == f"xferlab: study ({sweep.resolve().name})"  # not "latest"
    assert f"wrote the W&B report's definition to {written}" in out
    assert f"wandb sync {sweep}/*/wandb/offline-run-*" in out and "--publish" in out


def test_a_sweep_without_its_report_is_a_clear_error(sweep, capsys):
    (sweep / "report" / "study" / "summary.md").unlink()
    assert dashboard.main([str(sweep)]) == 2
    assert f"run `python -m xferlab.report {sweep}` first" in capsys.readouterr().err


def test_publishing_without_credentials_says_what_is_missing(sweep, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert dashboard.main([str(sweep), "--publish"]) == 2
    assert "--publish needs W&B credentials" in capsys.readouterr().err
    assert not (sweep / "report" / "wandb_report.json").exists()
