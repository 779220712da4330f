import json

import numpy as np
import pandas as pd
import pytest
import yaml

from xferlab.reporting.aggregate import collect_runs
from xferlab.reporting.build import build_report
from xferlab.reporting.consistency import flag_inconsistent


def write_run(root, name, backbone, seed, f1, lr=0.001, rng=None, split_seed=0, extra=None, setting=None,
              recorded=True):
    """A finished job as `python -m xferlab.train` leaves it. `setting`: {dotted key: value} set on
    its command line (in overrides.yaml and config.yaml, and in metrics.json's settings unless
    `recorded=False`, as a run from before settings were recorded)."""
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    rng = rng or np.random.default_rng(seed)
    labels = np.repeat([0, 1], 20)
    pred = np.where(rng.random(40) < f1, labels, 1 - labels)
    from sklearn.metrics import accuracy_score, f1_score

    observed = f1_score(labels, pred, average="macro")
    settings = {"settings": dict(setting)} if setting is not None and recorded else {}
    (d / "metrics.json").write_text(json.dumps({
        "experiment": "e", "dataset": "d", "backbone": backbone, "channels": "natural", "head": "linear",
        "seed": seed, "split_seed": split_seed, "test/macro_f1": observed, "test/accuracy": accuracy_score(labels, pred),
        "test/f1/a": observed, "test/f1/b": observed, **settings, **(extra or {})}))
    config = {"seed": seed, "split_seed": split_seed, "backbone": {"name": backbone},
              "head": {"optimizer": {"lr": lr}}, "paths": {"x": str(d)}}
    for key, value in (setting or {}).items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    overrides = [f"backbone={backbone}", *(f"{k}={v}" for k, v in (setting or {}).items()), f"seed={seed}"]
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    pd.DataFrame({"target": [f"s{split_seed}t{i // 2}" for i in range(40)], "label": labels, "pred": pred,
                  "label_name": np.array(["a", "b"])[labels], "pred_name": np.array(["a", "b"])[pred]}
                 ).to_csv(d / "predictions.csv", index=False)
    return d


def test_a_run_differing_beyond_the_swept_keys_is_flagged(tmp_path):
    for s in range(3):
        write_run(tmp_path, f"a{s}", "x", s, 0.7)
        write_run(tmp_path, f"b{s}", "y", s, 0.8)
    write_run(tmp_path, "odd", "y", 9, 0.9, lr=0.5)
    kept, flagged = flag_inconsistent(collect_runs([tmp_path]))
    assert len(kept) == 6 and list(flagged["run_dir"]) == [str(tmp_path / "odd")]
    assert "head.optimizer.lr" in flagged["reason"].iloc[0]


def test_report_writes_tables_and_figures(tmp_path):
    for s in range(3):
        write_run(tmp_path / "sweep", f"a{s}", "x", s, 0.6 + 0.01 * s)
        write_run(tmp_path / "sweep", f"b{s}", "y", s, 0.8 + 0.01 * s)
    text = build_report([tmp_path / "sweep"], tmp_path / "out", n_boot=200, reference="x")
    assert text.index("| y |") < text.index("| x |")  # best first
    for name in ("summary.csv", "summary.md", "summary.tex", "macro_f1.png", "per_class_f1.png",
                 "per_class_f1_forest.png", "per_class_f1.csv", "comparisons.csv", "verdicts.md", "confusion_best.png"):
        assert (tmp_path / "out" / "e" / name).exists(), name
    summary = pd.read_csv(tmp_path / "out" / "e" / "summary.csv")
    assert summary["condition"].tolist() == ["y", "x"]
    compared = pd.read_csv(tmp_path / "out" / "e" / "comparisons.csv")
    row = compared[compared["level"] == "crop"].iloc[0]
    assert (row["a"], row["b"]) == ("y", "x") and row["diff"] > 0.1 and row["ci_low"] > 0
    assert row["verdict"].startswith("y > x: +") and row["verdict"] in text
    tex = (tmp_path / "out" / "e" / "comparisons.tex").read_text()
    assert f"y vs x & crop & ${row['diff']:+.4f}$ & $[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]$" in tex
    verdicts = (tmp_path / "out" / "e" / "verdicts.md").read_text()
    assert verdicts.startswith("**per crop**\n\n- " + row["verdict"])
    assert "is not a condition" not in text and "no umap map" in text  # these test runs have no embedding cache
    confusions = (tmp_path / "out" / "e" / "confusions.md").read_text().splitlines()
    assert [line.split(" | ")[0] for line in confusions[2:]] == ["| y", "| x"]
    from xferlab.reporting.confusion import confusion_from_runs

    x_runs = sorted(str(tmp_path / "sweep" / f"a{s}") for s in range(3))
    share = confusion_from_runs(x_runs).loc["a", "b"]  # x's share of class a predicted as b
    assert f"a -> b {share:.2f}" in confusions[3]


def test_report_draws_the_knn_curve(tmp_path):
    for name, backbone in (("a", "x"), ("b", "y")):
        d = write_run(tmp_path / "sweep", name, backbone, 0, 0.7)
        metrics = json.loads((d / "metrics.json").read_text())
        metrics.update({f"knn/k={k}/test/macro_f1": 0.5 + 0.01 * k for k in (1, 5)})
        (d / "metrics.json").write_text(json.dumps(metrics))
    text = build_report([tmp_path / "sweep"], tmp_path / "out", n_boot=0)
    assert "kNN test macro F1 by k" in text and "no intervals over test proteins" in text
    assert (tmp_path / "out" / "e" / "macro_f1_vs_k.png").exists()
    curve = pd.read_csv(tmp_path / "out" / "e" / "knn_macro_f1_by_k.csv", index_col=0)
    assert curve.loc["x", "5"] == pytest.approx(0.55)


def broken_sweep(root):
    """Six jobs of two conditions: one never finished (only .hydra/), one with a truncated metrics.json,
    one without predictions.csv, three complete."""
    for s in range(3):
        write_run(root, f"backbone=x,seed={s}", "x", s, 0.6 + 0.01 * s)
        write_run(root, f"backbone=y,seed={s}", "y", s, 0.8 + 0.01 * s)
    (root / "backbone=x,seed=2" / "metrics.json").unlink()                       # crashed or interrupted
    text = (root / "backbone=y,seed=1" / "metrics.json").read_text()
    (root / "backbone=y,seed=1" / "metrics.json").write_text(text[: len(text) // 2])  # truncated
    (root / "backbone=y,seed=2" / "predictions.csv").unlink()
    return root


def test_report_names_missing_and_broken_jobs_and_reports_the_rest(tmp_path, capsys):
    from xferlab.report import main

    sweep = broken_sweep(tmp_path / "sweep")
    assert main([str(sweep), "--out", str(tmp_path / "out"), "--bootstrap", "10"]) == 0
    out = capsys.readouterr().out
    left_out = out[: out.index("## e")]
    assert "2 job(s) left out" in left_out
    assert f"{sweep / 'backbone=x,seed=2'}: no metrics.json: the job did not finish" in left_out
    assert f"{sweep / 'backbone=y,seed=1'}: metrics.json is unreadable, truncated or not JSON" in left_out
    assert f"{sweep / 'backbone=y,seed=2'}: predictions.csv is missing" in left_out
    assert "hydra.sweep.dir" in left_out  # the fix
    assert (tmp_path / "out" / "left_out.txt").read_text().count("\n") == 2
    summary = pd.read_csv(tmp_path / "out" / "e" / "summary.csv").set_index("condition")
    assert summary.loc["y", "n_units"] == 2 and summary.loc["x", "n_units"] == 2
    runs = collect_runs([sweep]).set_index("run_dir")
    assert summary.loc["y", "test/macro_f1/mean"] == pytest.approx(np.mean(  # seeds 0 and 2
        [runs.loc[str(sweep / f"backbone=y,seed={s}"), "test/macro_f1"] for s in (0, 2)]))
    assert np.isnan(summary.loc["y", "test/macro_f1/boot_low"])  # no interval from incomplete predictions
    assert np.isfinite(summary.loc["x", "test/macro_f1/boot_low"])
    assert (tmp_path / "out" / "e" / "confusion_best.png").exists()  # from the best condition's usable runs

    for job in ("backbone=x,seed=0", "backbone=x,seed=1", "backbone=y,seed=0", "backbone=y,seed=2"):
        (sweep / job / "metrics.json").write_text("{}")
    assert main([str(sweep), "--out", str(tmp_path / "out2")]) == 2  # nothing left to report
    err = capsys.readouterr().err
    assert f"{sweep / 'backbone=x,seed=0'}: metrics.json lacks ['experiment'" in err


def test_conditions_with_different_macro_f1_averaging_are_never_averaged_together(tmp_path):
    for average_over in ("present", "all"):
        d = write_run(tmp_path / "sweep", f"avg={average_over}", "x", 0, 0.8)
        metrics = json.loads((d / "metrics.json").read_text())
        (d / "metrics.json").write_text(json.dumps({**metrics, "macro_f1_average_over": average_over}))
    build_report([tmp_path / "sweep"], tmp_path / "out", n_boot=0)
    summary = pd.read_csv(tmp_path / "out" / "e" / "summary.csv")
    assert sorted(summary["macro_f1_average_over"]) == ["all", "present"]


def test_a_split_seed_sweep_pairs_runs_by_split_and_seed(tmp_path):
    """`backbone=x,y split_seed=0,1 seed=0`: each (split_seed, seed) is one unit, paired between
    conditions; the bootstrap draws each split's own test proteins."""
    for backbone, f1 in (("x", 0.6), ("y", 0.9)):
        for split in (0, 1):
            write_run(tmp_path / "sweep", f"b={backbone},split={split}", backbone, 0, f1, split_seed=split,
                      rng=np.random.default_rng([split, int(f1 * 10)]))
    text = build_report([tmp_path / "sweep"], tmp_path / "out", n_boot=100, reference="x")
    summary = pd.read_csv(tmp_path / "out" / "e" / "summary.csv").set_index("condition")
    assert summary.loc["y", "n_units"] == 2 and summary.loc["y", "n_splits"] == 2
    assert "2 (2 splits)" in text
    compared = pd.read_csv(tmp_path / "out" / "e" / "comparisons.csv")
    assert compared.loc[0, "n_units"] == 2 and compared.loc[0, "ci_low"] > 0


def test_pretraining_seeds_are_units_and_their_spread_is_shown(tmp_path):
    """`backbone=x,y backbone.pretrain_seed=0,1,2`: each pretraining seed is a unit (paired with the
    other condition's same seed), and the table gives the sd over pretraining seeds."""
    for backbone, f1 in (("x", 0.6), ("y", 0.9)):
        for k in (0, 1, 2):
            write_run(tmp_path / "sweep", f"b={backbone},p={k}", backbone, 0, f1 - 0.05 * k,
                      rng=np.random.default_rng([k, int(f1 * 10)]), extra={"pretrain_seed": k})
    text = build_report([tmp_path / "sweep"], tmp_path / "out", n_boot=100, reference="x")
    summary = pd.read_csv(tmp_path / "out" / "e" / "summary.csv").set_index("condition")
    assert summary.loc["y", "n_units"] == 3 and summary.loc["y", "n_pretrain"] == 3
    runs = collect_runs([tmp_path / "sweep"])
    per_seed = runs[runs["backbone"] == "y"].sort_values("pretrain_seed")["test/macro_f1"].to_numpy()
    assert summary.loc["y", "pretrain_std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert "sd over pretraining seeds" in text and "3 pretrainings" in text
    compared = pd.read_csv(tmp_path / "out" / "e" / "comparisons.csv")
    assert compared.loc[0, "n_units"] == 3


def test_runs_from_before_average_over_existed_match_runs_that_hold_its_default(tmp_path):
    for s in range(2):
        write_run(tmp_path, f"old{s}", "x", s, 0.7)
        new = write_run(tmp_path, f"new{s}", "x", s + 2, 0.7)
        config = yaml.safe_load((new / "config.yaml").read_text())
        (new / "config.yaml").write_text(yaml.safe_dump({**config, "metrics": {"average_over": "present"}}))
    kept, flagged = flag_inconsistent(collect_runs([tmp_path]))
    assert len(kept) == 4 and len(flagged) == 0
    (new / "config.yaml").write_text(yaml.safe_dump({**config, "metrics": {"average_over": "all"}}))
    kept, flagged = flag_inconsistent(collect_runs([tmp_path]))
    assert list(flagged["run_dir"]) == [str(new)] and "metrics.average_over" in flagged["reason"].iloc[0]


def test_a_key_that_another_condition_key_determines_does_not_name_conditions(tmp_path):
    """`features` differs only with the backbone (pixels has its own): conditions are named by
    backbone alone; a key that varies on its own (label_fraction) still names them."""
    import json as _json

    for backbone, features in (("vit", "cls"), ("pixels", "pixels")):
        for fraction in (0.5, 1.0):
            d = tmp_path / f"{backbone}-{fraction}"
            d.mkdir()
            (d / "metrics.json").write_text(_json.dumps({
                "experiment": "e", "backbone": backbone, "features": features, "label_fraction": fraction,
                "seed": 0, "test/macro_f1": 0.5}))
    from xferlab.reporting.tables import experiment_table

    table = experiment_table(collect_runs([tmp_path]))
    assert sorted(table["condition"]) == ["pixels-0.5", "pixels-1.0", "vit-0.5", "vit-1.0"]


def test_a_class_with_a_single_test_protein_is_named_and_its_intervals_stay_finite(tmp_path):
    """Class b (index 1) has one test protein (t19): it stays in every draw (no variance from it),
    and the report says so by name (these tables have no score columns: classes are named by index)."""
    for s in range(3):
        for name, backbone, f1 in (("a", "x", 0.6), ("b", "y", 0.8)):
            d = write_run(tmp_path / "sweep", f"{name}{s}", backbone, s, f1 + 0.01 * s)
            table = pd.read_csv(d / "predictions.csv")
            table.loc[table["target"] != "s0t19", ["label", "label_name"]] = [0, "a"]
            table.to_csv(d / "predictions.csv", index=False)
    text = build_report([tmp_path / "sweep"], tmp_path / "out", n_boot=200, reference="x")
    assert "class(es) with a single test protein in a split" in text and ": 1 (split_seed 0)" in text
    compared = pd.read_csv(tmp_path / "out" / "e" / "comparisons.csv")
    assert np.isfinite(compared[["ci_low", "ci_high", "p"]].to_numpy()).all()
