import json

import numpy as np
import pandas as pd
import pytest
import yaml

from xferlab.reporting.build import build_report
from xferlab.reporting.consistency import flag_inconsistent
from xferlab.reporting.aggregate import collect_runs
from xferlab.reporting.stats import bootstrap_targets, mean_ci, paired_tests


def write_run(root, name, backbone, seed, f1, lr=0.001, rng=None):
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({
        "experiment": "e", "dataset": "d", "backbone": backbone, "channels": "natural", "head": "linear",
        "seed": seed, "test/macro_f1": f1, "test/accuracy": f1, "test/f1/a": f1, "test/f1/b": f1}))
    (d / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "backbone": {"name": backbone},
                                                   "head": {"optimizer": {"lr": lr}}, "paths": {"x": str(d)}}))
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"backbone={backbone}", f"seed={seed}"]))
    rng = rng or np.random.default_rng(seed)
    labels = np.repeat([0, 1], 20)
    pred = np.where(rng.random(40) < f1, labels, 1 - labels)
    pd.DataFrame({"target": [f"t{i // 2}" for i in range(40)], "label": labels, "pred": pred,
                  "label_name": np.array(["a", "b"])[labels], "pred_name": np.array(["a", "b"])[pred]}
                 ).to_csv(d / "predictions.csv", index=False)
    return d


def test_mean_ci_and_paired_tests():
    lo, hi = mean_ci([0.5, 0.6, 0.7])
    assert lo < 0.6 < hi and hi - 0.6 == pytest.approx(0.6 - lo)
    assert np.isnan(mean_ci([0.5])[0])
    best = pd.Series([0.8, 0.82, 0.81, 0.83, 0.79], index=range(5))
    worse = best - np.array([0.1, 0.12, 0.09, 0.11, 0.1])
    out = paired_tests(best, worse)
    assert out["n_pairs"] == 5 and out["mean_diff"] == pytest.approx(-0.104)
    assert out["t_test_p"] < 0.001 and 0 < out["wilcoxon_p"] <= 0.0625


def test_bootstrap_over_targets_brackets_the_observed_score(tmp_path):
    d = write_run(tmp_path, "r", "x", 0, 0.8)
    lo, hi = bootstrap_targets([d], n_boot=200)
    from sklearn.metrics import f1_score

    table = pd.read_csv(d / "predictions.csv")
    observed = f1_score(table["label"], table["pred"], average="macro")
    assert lo <= observed <= hi and hi - lo > 0


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
    text = build_report([tmp_path / "sweep"], tmp_path / "out", n_boot=20)
    assert text.index("| y |") < text.index("| x |")  # best first
    for name in ("summary.csv", "summary.md", "summary.tex", "bar_macro_f1.png", "per_class_f1.png", "confusion_best.png"):
        assert (tmp_path / "out" / "e" / name).exists(), name
    summary = pd.read_csv(tmp_path / "out" / "e" / "summary.csv")
    assert summary["condition"].tolist() == ["y", "x"]
    assert summary.loc[1, "vs_best/mean_diff"] == pytest.approx(-0.2)


def test_report_draws_the_knn_curve(tmp_path):
    for name, backbone in (("a", "x"), ("b", "y")):
        d = write_run(tmp_path / "sweep", name, backbone, 0, 0.7)
        metrics = json.loads((d / "metrics.json").read_text())
        metrics.update({f"knn/k={k}/test/macro_f1": 0.5 + 0.01 * k for k in (1, 5)})
        (d / "metrics.json").write_text(json.dumps(metrics))
    text = build_report([tmp_path / "sweep"], tmp_path / "out", n_boot=0)
    assert "kNN test macro F1 by k" in text
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
    assert summary.loc["y", "n_seeds"] == 2 and summary.loc["x", "n_seeds"] == 2
    assert summary.loc["y", "test/macro_f1/mean"] == pytest.approx(0.81)  # seeds 0 and 2
    assert np.isnan(summary.loc["y", "test/macro_f1/boot_low"])  # no interval from incomplete predictions
    assert np.isfinite(summary.loc["x", "test/macro_f1/boot_low"])
    assert (tmp_path / "out" / "e" / "confusion_best.png").exists()  # from the best condition's usable runs

    for job in ("backbone=x,seed=0", "backbone=x,seed=1", "backbone=y,seed=0", "backbone=y,seed=2"):
        (sweep / job / "metrics.json").write_text("{}")
    assert main([str(sweep), "--out", str(tmp_path / "out2")]) == 2  # nothing left to report
    err = capsys.readouterr().err
    assert f"{sweep / 'backbone=x,seed=0'}: metrics.json lacks ['experiment'" in err


def test_the_bootstrap_and_conditions_follow_each_runs_macro_f1_averaging(tmp_path):
    from sklearn.metrics import f1_score

    runs = []
    for average_over in ("present", "all"):
        d = write_run(tmp_path / "sweep", f"avg={average_over}", "x", 0, 0.8)
        metrics = json.loads((d / "metrics.json").read_text())
        (d / "metrics.json").write_text(json.dumps({**metrics, "macro_f1_average_over": average_over}))
        table = pd.read_csv(d / "predictions.csv")  # two classes in the labels, a third one in the scores
        table.assign(**{"score/a": 0.5, "score/b": 0.5, "score/c": 0.0}).to_csv(d / "predictions.csv", index=False)
        runs.append(d)
    table = pd.read_csv(runs[0] / "predictions.csv")
    observed = f1_score(table["label"], table["pred"], average="macro")
    lo, hi = bootstrap_targets([runs[0]], n_boot=50, average_over="present")
    lo_all, hi_all = bootstrap_targets([runs[1]], n_boot=50, average_over="all")
    assert lo <= observed <= hi and (lo_all, hi_all) == pytest.approx((lo * 2 / 3, hi * 2 / 3))
    build_report([tmp_path / "sweep"], tmp_path / "out", n_boot=0)
    summary = pd.read_csv(tmp_path / "out" / "e" / "summary.csv")
    assert sorted(summary["macro_f1_average_over"]) == ["all", "present"]  # never averaged together


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
    from xferlab.reporting.build import experiment_table

    table = experiment_table(collect_runs([tmp_path]), n_boot=0)
    assert sorted(table["condition"]) == ["pixels-0.5", "pixels-1.0", "vit-0.5", "vit-1.0"]
