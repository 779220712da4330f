"""Every setting a sweep varies is part of the condition: its own row, its own name, comparisons
only within matching settings; a difference no job's command line set is flagged by name."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.reporting.test_build import write_run
from xferlab.reporting.aggregate import collect_runs
from xferlab.reporting.build import build_report
from xferlab.reporting.consistency import flag_inconsistent
from xferlab.reporting.tables import experiment_table, markdown

F1 = {("x", "crops"): 0.5, ("x", "fov"): 0.76, ("y", "crops"): 0.62, ("y", "fov"): 0.9}


def mode_sweep(root, recorded=True, backbones=("x", "y")):
    """`backbone=x,y dataset.mode=crops,fov seed=0,1,2`, as `experiment=paper` sweeps it."""
    for backbone in backbones:
        for mode in ("crops", "fov"):
            for seed in range(3):
                write_run(root, f"backbone={backbone},dataset.mode={mode},seed={seed}", backbone, seed,
                          F1[backbone, mode], rng=np.random.default_rng([seed, len(mode), ord(backbone)]),
                          setting={"dataset.mode": mode}, recorded=recorded)
    return root


def test_a_swept_setting_makes_its_own_conditions_named_by_it(tmp_path):
    runs = collect_runs([mode_sweep(tmp_path)])
    table = experiment_table(runs).set_index("condition")
    assert sorted(table.index) == ["x, mode=crops", "x, mode=fov", "y, mode=crops", "y, mode=fov"]
    assert (table["n_units"] == 3).all() and sorted(table["dataset.mode"]) == ["crops", "crops", "fov", "fov"]
    fov_y = runs[runs["run_dir"].str.contains("backbone=y,dataset.mode=fov")]
    assert table.loc["y, mode=fov", "test/macro_f1/mean"] == pytest.approx(fov_y["test/macro_f1"].mean())
    assert set(table.loc["y, mode=fov", "_runs"]["run_dir"]) == set(fov_y["run_dir"])  # no crops run pooled in


def test_a_sweep_over_a_setting_alone_names_conditions_by_backbone_and_setting(tmp_path):
    table = experiment_table(collect_runs([mode_sweep(tmp_path, backbones=("x",))]))
    assert sorted(table["condition"]) == ["x, mode=crops", "x, mode=fov"]


def test_runs_from_before_settings_were_recorded_take_them_from_hydras_record(tmp_path):
    runs = collect_runs([mode_sweep(tmp_path, recorded=False)])
    assert "settings" not in runs.columns
    assert sorted(experiment_table(runs)["condition"]) == ["x, mode=crops", "x, mode=fov", "y, mode=crops",
                                                           "y, mode=fov"]


def test_a_run_without_a_setting_its_siblings_set_takes_its_config_value(tmp_path):
    """Two sweeps reported together: one set `backbone.preprocess.intensity=percentile` on the command
    line, the other left the config's `dtype`; a config group's option comes from hydra.yaml."""
    for seed in range(2):
        write_run(tmp_path / "a", f"s{seed}", "x", seed, 0.6, setting={"backbone.preprocess.intensity": "percentile"})
        d = write_run(tmp_path / "b", f"s{seed}", "x", seed, 0.7)
        config = yaml.safe_load((d / "config.yaml").read_text())
        config["backbone"]["preprocess"] = {"intensity": "dtype"}
        (d / "config.yaml").write_text(yaml.safe_dump(config))
    kept, flagged = flag_inconsistent(collect_runs([tmp_path]))
    assert len(flagged) == 0  # set on a command line: a condition, not an inconsistency
    assert sorted(experiment_table(kept)["condition"]) == ["x, intensity=dtype", "x, intensity=percentile"]

    for seed in range(2):  # a config group chosen on some command lines only: its option from .hydra/hydra.yaml
        for sweep, trainer in (("a", None), ("b", "gpu")):
            d = tmp_path / sweep / f"s{seed}"
            if trainer:
                overrides = yaml.safe_load((d / ".hydra" / "overrides.yaml").read_text())
                (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*overrides, f"trainer={trainer}"]))
            choices = {"backbone": "x", "trainer": trainer or "cpu"}
            (d / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    names = sorted(experiment_table(collect_runs([tmp_path]))["condition"])
    assert names == ["x, intensity=dtype, trainer=gpu", "x, intensity=percentile, trainer=cpu"]


def test_settings_that_do_not_vary_leave_the_report_as_it_was(tmp_path):
    for s in range(3):
        write_run(tmp_path / "plain", f"a{s}", "x", s, 0.6 + 0.01 * s)
        write_run(tmp_path / "plain", f"b{s}", "y", s, 0.8 + 0.01 * s)
        write_run(tmp_path / "set", f"a{s}", "x", s, 0.6 + 0.01 * s, setting={"dataset.mode": "crops"})
        write_run(tmp_path / "set", f"b{s}", "y", s, 0.8 + 0.01 * s, setting={"dataset.mode": "crops"})
    plain = build_report([tmp_path / "plain"], tmp_path / "out-plain", n_boot=50, reference="x", embedding_map="none")
    same = build_report([tmp_path / "set"], tmp_path / "out-set", n_boot=50, reference="x", embedding_map="none")
    assert same.replace(str(tmp_path / "set"), "") == plain.replace(str(tmp_path / "plain"), "")
    for name in ("summary.md", "summary.csv", "verdicts.md", "comparisons.csv", "confusions.md"):
        assert (tmp_path / "out-set" / "e" / name).read_text() == (tmp_path / "out-plain" / "e" / name).read_text()
    assert "told apart by setting" not in same


def test_replicate_keys_never_name_a_condition_nor_flag_a_run(tmp_path):
    """`backbone.pretrain_seed` and `split_seed` on the command line make units, as `seed` does;
    and a run that differs from its siblings in a replicate key only is one more unit, swept or not."""
    for backbone in ("x", "y"):
        for k in range(2):
            write_run(tmp_path / "swept", f"{backbone}{k}", backbone, 0, 0.7, split_seed=k, extra={"pretrain_seed": k},
                      setting={"backbone.pretrain_seed": k, "split_seed": k})
    kept, flagged = flag_inconsistent(collect_runs([tmp_path / "swept"]))
    assert len(flagged) == 0
    table = experiment_table(kept)
    assert sorted(table["condition"]) == ["x", "y"] and (table["n_units"] == 2).all()

    for k in range(3):  # nothing on the command line (e.g. runs made one by one with edited configs)
        d = write_run(tmp_path / "unswept", f"x{k}", "x", 0, 0.7, extra={"pretrain_seed": k},
                      setting={"backbone.pretrain_seed": k}, recorded=False)
        (d / ".hydra" / "overrides.yaml").write_text("[]\n")
    kept, flagged = flag_inconsistent(collect_runs([tmp_path / "unswept"]))
    assert len(flagged) == 0 and experiment_table(kept)["n_units"].tolist() == [3]


def test_comparisons_pair_conditions_only_within_matching_settings(tmp_path):
    build_report([mode_sweep(tmp_path / "sweep")], tmp_path / "out", n_boot=200, reference="x", pairs="none",
                 embedding_map="none")
    compared = pd.read_csv(tmp_path / "out" / "e" / "comparisons.csv")
    crop = compared[compared["level"] == "crop"]
    assert sorted(zip(crop["a"], crop["b"])) == [("y, mode=crops", "x, mode=crops"), ("y, mode=fov", "x, mode=fov")]
    runs = collect_runs([tmp_path / "sweep"]).set_index("run_dir")
    def score(backbone, seed):
        return runs.loc[str(tmp_path / "sweep" / f"backbone={backbone},dataset.mode=fov,seed={seed}"), "test/macro_f1"]
    fov = crop[crop["a"] == "y, mode=fov"].iloc[0]  # paired on seeds, fov runs only
    assert fov["n_units"] == 3
    assert fov["diff"] == pytest.approx(np.mean([score("y", s) - score("x", s) for s in range(3)]))

    text = build_report([tmp_path / "sweep"], tmp_path / "all", n_boot=200, reference="x", pairs="all",
                        embedding_map="none")
    compared = pd.read_csv(tmp_path / "all" / "e" / "comparisons.csv")
    pairs = {frozenset(p) for p in zip(compared["a"], compared["b"])}
    assert pairs == {frozenset(p) for p in [("y, mode=crops", "x, mode=crops"), ("y, mode=fov", "x, mode=fov"),
                                            ("x, mode=crops", "x, mode=fov"), ("y, mode=crops", "y, mode=fov")]}
    assert "conditions told apart by setting(s) besides the condition keys: dataset.mode (mode=crops|fov)" in text
    summary = pd.read_csv(tmp_path / "all" / "e" / "summary.csv")
    assert list(summary["condition"]) == ["y, mode=fov", "x, mode=fov", "y, mode=crops", "x, mode=crops"]
    assert "_base" not in summary.columns and list(summary["dataset.mode"]) == ["fov", "fov", "crops", "crops"]


def test_a_reference_missing_from_one_setting_is_said_and_that_setting_has_no_reference_comparison(tmp_path):
    mode_sweep(tmp_path / "sweep")
    for seed in range(3):  # y was run in crops mode only
        for name in (f"backbone=y,dataset.mode=fov,seed={seed}",):
            (tmp_path / "sweep" / name / "metrics.json").unlink()
    text = build_report([tmp_path / "sweep"], tmp_path / "out", n_boot=100, reference="y", pairs="none",
                        embedding_map="none")
    assert "report.reference='y' names no condition of the settings of ['x, mode=fov']" in text
    compared = pd.read_csv(tmp_path / "out" / "e" / "comparisons.csv")
    assert set(zip(compared["a"], compared["b"])) == {("x, mode=crops", "y, mode=crops")}


def test_the_knn_curve_keeps_settings_apart(tmp_path):
    for mode in ("crops", "fov"):
        d = write_run(tmp_path, f"m={mode}", "x", 0, 0.7, setting={"dataset.mode": mode})
        metrics = json.loads((d / "metrics.json").read_text())
        metrics.update({f"knn/k={k}/test/macro_f1": (0.5 if mode == "crops" else 0.6) + 0.01 * k for k in (1, 5)})
        (d / "metrics.json").write_text(json.dumps(metrics))
    build_report([tmp_path], tmp_path / "out", n_boot=0)
    curve = pd.read_csv(tmp_path / "out" / "e" / "knn_macro_f1_by_k.csv", index_col=0)
    assert curve.loc["x, mode=fov", "5"] == pytest.approx(0.65)
    assert curve.loc["x, mode=crops", "5"] == pytest.approx(0.55)


def test_an_unswept_difference_is_flagged_naming_the_key_and_both_values(tmp_path):
    """The same difference is a condition when a command line set it, and flagged when none did."""
    for s in range(3):
        write_run(tmp_path / "unswept", f"a{s}", "x", s, 0.7)
        write_run(tmp_path / "swept", f"a{s}", "x", s, 0.7)
    write_run(tmp_path / "unswept", "odd", "x", 9, 0.7, lr=0.5)
    write_run(tmp_path / "swept", "odd", "x", 9, 0.7, lr=0.5, setting={"head.optimizer.lr": 0.5})
    kept, flagged = flag_inconsistent(collect_runs([tmp_path / "unswept"]))
    assert len(kept) == 3 and list(flagged["run_dir"]) == [str(tmp_path / "unswept" / "odd")]
    reason = flagged["reason"].iloc[0]
    assert "head.optimizer.lr=0.5 (kept runs: 0.001)" in reason and "command line" in reason
    text = build_report([tmp_path / "unswept"], tmp_path / "out", n_boot=0)
    assert "flagged and left out" in text and "head.optimizer.lr=0.5" in text

    kept, flagged = flag_inconsistent(collect_runs([tmp_path / "swept"]))
    assert len(kept) == 4 and len(flagged) == 0
    table = experiment_table(kept).set_index("condition")
    assert dict(table["n_units"]) == {"x, lr=0.001": 3, "x, lr=0.5": 1}


def test_settings_that_share_a_last_part_are_labelled_by_their_whole_key(tmp_path):
    for a in (0.1, 0.2):
        for b in (1, 2):
            write_run(tmp_path, f"{a}-{b}", "x", 0, 0.7, setting={"head.optimizer.lr": a, "backbone.lr": b})
    names = sorted(experiment_table(collect_runs([tmp_path]))["condition"])
    assert names[0] == "x, head.optimizer.lr=0.1, backbone.lr=1" and len(names) == 4


def test_two_conditions_that_would_share_a_name_are_refused(tmp_path):
    """`features` missing in one run and empty in another: both leave it out of the name."""
    for i, extra in enumerate(({}, {"features": ""})):
        d = tmp_path / f"r{i}"
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps({"experiment": "e", "backbone": "x", "seed": 0,
                                                    "test/macro_f1": 0.5, **extra}))
    with pytest.raises(ValueError, match=r"conditions \['x'\] share a name"):
        experiment_table(collect_runs([tmp_path]))


def test_markdown_of_a_setting_sweep_is_readable(tmp_path):
    md = markdown(experiment_table(collect_runs([mode_sweep(tmp_path)])))
    assert [line.split(" | ")[0] for line in md.splitlines()[2:]] == [
        "| y, mode=fov", "| x, mode=fov", "| y, mode=crops", "| x, mode=crops"]
