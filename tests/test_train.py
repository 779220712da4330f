"""The spine end to end: `run_job` in-process on a shrunk config, and a multirun as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from sklearn.metrics import f1_score

from xferlab.backbones.weights import state_dict_sha256
from tests.conftest import CONF_DIR
from xferlab.job import run_job


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One job on a fresh outputs root (so extraction really runs)."""
    from tests.conftest import SMOKE, compose_config

    root = tmp_path_factory.mktemp("first")
    cfg = compose_config(SMOKE + [f"paths.output_root={root}", f"paths.output_dir={root / 'run'}"])
    return cfg, run_job(cfg)


def test_run_writes_metrics_predictions_and_config(first_run):
    cfg, result = first_run
    run_dir = result.run_dir
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("test/macro_f1", "test/accuracy", "val/macro_f1", "seed", "split_seed", "backbone", "channels",
                "dataset", "head", "config_digest", "git_revision", "data_fingerprint", "embedding_cache_key"):
        assert key in metrics, key
    assert metrics["seed"] == 0 and metrics["backbone"] == "random_tiny" and metrics["channels"] == "natural"
    assert {f"test/f1/{c}" for c in ("nucleoplasm", "vesicles")} <= set(metrics)
    assert (run_dir / "config.yaml").read_text().startswith("experiment_name: smoke")
    assert (run_dir / "csv" / "metrics.csv").exists()
    predictions = pd.read_csv(run_dir / "predictions.csv")
    assert len(predictions) == metrics["n_test"]
    assert {"sample_id", "target", "label", "pred"} <= set(predictions.columns)
    assert json.loads((run_dir / "run_info.json").read_text())["cache_hit"] is False


def test_run_records_the_probe_path_and_its_choice_and_writes_no_checkpoint(first_run):
    cfg, result = first_run
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    path = [k for k in metrics if k.startswith("probe/l2=") and k.endswith("/val/macro_f1")]
    assert len(path) == metrics["head/path_fitted"] > 1 and metrics["head/path_size"] >= len(path)
    assert f"probe/l2={metrics['head/l2']:.3g}/val/macro_f1" in path
    assert metrics["val/macro_f1"] == metrics[f"probe/l2={metrics['head/l2']:.3g}/val/macro_f1"]
    assert metrics["head/C"] == pytest.approx(1 / (metrics["head/l2"] * metrics["n_train"]))
    assert metrics["head/converged"] is True and metrics["head/iterations"] > 0
    info = json.loads((result.run_dir / "run_info.json").read_text())
    assert [p["l2"] for p in info["path"]] == sorted((p["l2"] for p in info["path"]), reverse=True)
    assert not (result.run_dir / "checkpoints").exists() and "best_checkpoint" not in info
    logged = pd.read_csv(result.run_dir / "csv" / "metrics.csv")
    assert {"train/loss", "val/macro_f1", "probe/l2", "test/macro_f1"} <= set(logged.columns)
    assert logged["val/macro_f1"].notna().sum() == len(path)  # one row per penalty, test once
    assert logged["test/macro_f1"].notna().sum() == 1


def test_the_sgd_grid_stays_available_as_head_linear_sgd(job_config):
    result = run_job(job_config("head=linear_sgd", "head.grid.lr=[0.1,0.3]", "head.grid.weight_decay=0.0001"))
    m = result.metrics
    members = [f"grid/lr={lr:g},wd=0.0001/val/macro_f1" for lr in (0.1, 0.3)]
    assert m["head"] == "linear_sgd" and set(members) <= set(m) and m["head/grid_size"] == 2
    assert m["head/lr"] in (0.1, 0.3) and m["val/macro_f1"] == max(m[k] for k in members)
    assert 0 <= m["head/best_epoch"] < result.info["epochs"]


def test_macro_f1_equals_sklearn_on_the_saved_predictions(first_run):
    _, result = first_run
    predictions = pd.read_csv(result.run_dir / "predictions.csv")
    scores = predictions.filter(like="score/").to_numpy()
    assert np.array_equal(scores.argmax(axis=1), predictions["pred"].to_numpy())
    expected = f1_score(predictions["label"], predictions["pred"], average="macro")
    assert result.metrics["test/macro_f1"] == pytest.approx(expected, abs=1e-6)
    assert 0.2 < result.metrics["test/macro_f1"] < 1.0  # learned something, not trivially perfect


def test_no_target_is_in_two_splits(first_run):
    _, result = first_run
    splits = {k: set(v) for k, v in json.loads((result.run_dir / "split_targets.json").read_text()).items()}
    assert not (splits["train"] & splits["val"]) and not (splits["train"] & splits["test"])
    assert not (splits["val"] & splits["test"])
    predictions = pd.read_csv(result.run_dir / "predictions.csv")
    assert set(predictions["target"]) == splits["test"]
    assert (predictions.groupby("target").size() == 3).all()  # every crop of a test target is in test


def test_backbone_weights_unchanged_and_head_trained(first_run):
    cfg, result = first_run
    info = json.loads((result.run_dir / "run_info.json").read_text())
    fresh = instantiate(cfg.backbone)  # the same config builds the same initial weights
    assert state_dict_sha256(result.backbone.model) == fresh.weights_sha256 == result.metrics["weights_sha256"]
    assert info["backbone_sha256_after"] == fresh.weights_sha256
    assert info["head_sha256_after"] == state_dict_sha256(result.head)
    assert result.head.fc.weight.abs().max() > 0  # fitted, not the zero start


def test_same_config_and_seed_give_identical_metrics(first_run, tmp_path):
    from tests.conftest import SMOKE, compose_config

    cfg, result = first_run
    root = Path(cfg.paths.output_root)
    again = run_job(compose_config(SMOKE + [f"paths.output_root={root}", f"paths.output_dir={tmp_path / 'again'}"]))
    assert json.loads((tmp_path / "again" / "run_info.json").read_text())["cache_hit"] is True
    for name in ("metrics.json", "predictions.csv", "split_targets.json"):  # bit-identical files
        assert (result.run_dir / name).read_bytes() == (again.run_dir / name).read_bytes(), name


def test_seed_zero_is_a_real_seed_and_the_probe_does_not_depend_on_it(first_run, tmp_path):
    from tests.conftest import SMOKE, compose_config

    cfg, result = first_run
    root = f"paths.output_root={cfg.paths.output_root}"
    sgd = [run_job(compose_config(SMOKE + ["head=linear_sgd", f"seed={s}", root, f"paths.output_dir={tmp_path / str(s)}"]))
           for s in (0, 1)]
    infos = [json.loads((r.run_dir / "run_info.json").read_text()) for r in sgd]
    assert infos[0]["head_sha256_before"] != infos[1]["head_sha256_before"]  # seed sets the grid's initialisation
    probe = run_job(compose_config(SMOKE + ["seed=1", root, f"paths.output_dir={tmp_path / 'probe1'}"]))
    assert probe.metrics["seed"] == 1 and probe.metrics["embedding_cache_key"] == result.metrics["embedding_cache_key"]
    assert probe.metrics["test/macro_f1"] == result.metrics["test/macro_f1"]  # a convex fit from zero weights
    assert probe.info["head_sha256_after"] == json.loads((result.run_dir / "run_info.json").read_text())["head_sha256_after"]


def test_missing_dataset_path_is_a_clear_error(job_config):
    with pytest.raises(FileNotFoundError, match="dataset.path=/nonexistent/store.zarr: no image store there"):
        run_job(job_config("dataset=store", "dataset.path=/nonexistent/store.zarr"))
    with pytest.raises(FileNotFoundError, match="dataset=store needs a path"):
        run_job(job_config("dataset=store"))


def run_cli(args, cwd, env_extra=None, timeout=600):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "xferlab.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_two_seed_multirun_extracts_once_with_one_wandb_run_per_job(tmp_path):
    bin_dir = tmp_path / "bin"  # an `srun` on the PATH, as on a cluster's login node: Lightning would warn
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    proc = run_cli(["-m", "experiment=smoke", "seed=0,1"], cwd=tmp_path,
                   env_extra={"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweeps = list((tmp_path / "outputs" / "sweeps" / "smoke").iterdir())
    assert len(sweeps) == 1
    jobs = sorted(p.name for p in sweeps[0].iterdir() if p.is_dir())
    assert jobs == ["seed=0", "seed=1"]
    infos = [json.loads((sweeps[0] / j / "run_info.json").read_text()) for j in jobs]
    assert [i["cache_hit"] for i in infos] == [False, True]
    assert "embedding cache hit" in (sweeps[0] / "seed=1" / "train.log").read_text()
    # the console: one line per job (name, score, time, cache), the INFO lines only in train.log
    header, *lines = proc.stdout.splitlines()
    assert header == f"2 job(s), every input checked -> {Path('outputs') / 'sweeps' / 'smoke' / sweeps[0].name}", header
    assert len(lines) == 2, proc.stdout
    for line, job, cache in zip(lines, jobs, ("extracted", "cache hit")):
        assert line.startswith("[random_tiny-natural-s") and " s  " in line and cache in line, line
        assert line.endswith(str(Path("outputs") / "sweeps" / "smoke" / sweeps[0].name / job)), line
    assert "INFO" not in proc.stderr and "Launching" not in proc.stdout + proc.stderr
    assert "srun" not in proc.stderr, proc.stderr[-2000:]
    assert "xferlab.job" in (sweeps[0] / "seed=0" / "train.log").read_text()
    for job in jobs:
        runs = list((sweeps[0] / job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, job
        assert list(runs[0].glob("*.wandb")), job
    seeds = [json.loads((sweeps[0] / j / "metrics.json").read_text())["seed"] for j in jobs]
    assert seeds == [0, 1]


def test_a_sweep_over_a_setting_records_it_names_its_jobs_by_it_and_the_report_keeps_its_values_apart(tmp_path):
    """`backbone.preprocess.normalize` is no condition key: each job records it among its settings and
    carries it in its name (its W&B run's too), and the report makes each value its own condition,
    from metrics.json and, for runs from before settings were recorded, from Hydra's record."""
    from xferlab.reporting.aggregate import collect_runs
    from xferlab.reporting.build import build_report
    from xferlab.reporting.tables import experiment_table

    proc = run_cli(["-m", "experiment=smoke", "backbone.preprocess.normalize=zscore,dataset"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = next((tmp_path / "outputs" / "sweeps" / "smoke").iterdir())
    for value in ("zscore", "dataset"):
        job = sweep / f"backbone.preprocess.normalize={value}"
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["settings"] == {"backbone.preprocess.normalize": value}
        name = f"random_tiny-natural-normalize={value}-s0"
        assert f"[{name}] test/macro_f1=" in proc.stdout
        wandb_runs = list((job / "wandb").glob("offline-run-*/*.wandb"))
        assert len(wandb_runs) == 1 and name.encode() in wandb_runs[0].read_bytes()
    text = build_report([sweep], tmp_path / "report", n_boot=0, embedding_map="none")
    summary = pd.read_csv(tmp_path / "report" / "smoke" / "summary.csv")
    assert sorted(summary["condition"]) == ["random_tiny, normalize=dataset", "random_tiny, normalize=zscore"]
    assert "backbone.preprocess.normalize (normalize=dataset|zscore)" in text

    for job in sweep.glob("backbone.preprocess.normalize=*"):  # as a run from before settings were recorded
        metrics = json.loads((job / "metrics.json").read_text())
        del metrics["settings"]
        (job / "metrics.json").write_text(json.dumps(metrics))
    assert sorted(experiment_table(collect_runs([sweep]))["condition"]) == sorted(summary["condition"])


@pytest.mark.parametrize("verbose, shown", [(False, ["a warning"]), (True, ["an info line", "a warning"])])
def test_the_console_shows_warnings_and_info_only_when_verbose_while_train_log_keeps_all(tmp_path, capsys, verbose,
                                                                                       shown):
    import logging
    import logging.config

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"verbose={verbose}"], return_hydra_config=True)
    OmegaConf.update(cfg, "hydra.runtime.output_dir", str(tmp_path), force_add=True)
    OmegaConf.update(cfg, "hydra.job.name", "train", force_add=True)
    assert cfg.hydra.hydra_logging.handlers.console.level == ("INFO" if verbose else "WARNING")
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logging.config.dictConfig(OmegaConf.to_container(cfg.hydra.job_logging, resolve=True))
        log = logging.getLogger("xferlab.job")
        log.info("an info line")
        log.warning("a warning")
        for handler in root.handlers:
            handler.flush()
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    console = capsys.readouterr().err
    assert [m for m in ("an info line", "a warning") if m in console] == shown
    assert "WARNING xferlab.job: a warning" in console
    written = (tmp_path / "train.log").read_text()
    assert "an info line" in written and "a warning" in written


def test_unknown_option_is_a_clear_error(tmp_path):
    proc = run_cli(["backbone=nope"], cwd=tmp_path)
    assert proc.returncode != 0
    assert "Could not find 'backbone/nope'" in proc.stderr
    assert "random" in proc.stderr  # the available options are listed
    proc = run_cli(["head.optimiser.lr=0.1"], cwd=tmp_path)
    assert proc.returncode != 0 and "head.optimiser" in proc.stderr
    assert not (tmp_path / "outputs" / "cache").exists()


def test_help_lists_config_groups(tmp_path):
    proc = run_cli(["--help"], cwd=tmp_path)
    assert proc.returncode == 0
    lines = {line.split(":")[0]: line for line in proc.stdout.splitlines() if ": " in line}
    for group in ("backbone", "channels", "dataset", "head", "trainer", "logger", "experiment", "paths"):
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        assert lines[group] == f"{group}: {', '.join(options)}"


def test_multilabel_run_scores_macro_f1_at_threshold_half(job_config):
    cfg = job_config("dataset=synthcell_tiny", "dataset.labels.rule=multilabel", "dataset.workers=1")
    result = run_job(cfg)
    predictions = pd.read_csv(result.run_dir / "predictions.csv", keep_default_na=False)
    classes = [c.split("/", 1)[1] for c in predictions.columns if c.startswith("score/")]
    truth = np.array([[c in row.split(";") for c in classes] for row in predictions["labels"]])
    scores = predictions[[f"score/{c}" for c in classes]].to_numpy()
    pred = scores > 0.5
    assert np.array_equal(pred, np.array([[c in row.split(";") for c in classes] for row in predictions["preds"]]))
    present = truth.any(axis=0) | pred.any(axis=0)  # metrics.average_over=present (the default)
    expected = f1_score(truth, pred, average=None, zero_division=0)[present].mean()
    assert result.metrics["test/macro_f1"] == pytest.approx(expected, abs=1e-6)
    assert result.metrics["macro_f1_average_over"] == "present"
    assert truth.sum(axis=1).max() >= 1


def test_graded_run_trains_on_grade_weights_and_scores_map_auroc_and_tuned_thresholds(job_config):
    """`labels.rule=graded`: soft targets (grade 3: 1, 2: 0.5, 1: 0.25); evaluation counts a class
    present at grade >= 2; threshold-free mAP / AUROC; F1 at per-class thresholds chosen on validation."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from xferlab.runtime.building import build

    cfg = job_config("dataset=synthcell_tiny", "dataset.labels.rule=graded", "dataset.workers=1")
    store = build(cfg.dataset).open(cfg.paths.data_dir)
    assert store.label_sets.dtype == np.float32 and set(np.unique(store.label_sets)) <= {0.0, 0.25, 0.5, 1.0}
    assert (store.label_sets == 0.25).any()
    result = run_job(cfg)
    m = result.metrics
    predictions = pd.read_csv(result.run_dir / "predictions.csv", keep_default_na=False)
    classes = [c.split("/", 1)[1] for c in predictions.columns if c.startswith("score/")]
    rows = store.samples.set_index("sample_id").index.get_indexer(predictions["sample_id"])
    truth = store.label_sets[rows] >= 0.5
    scores = predictions[[f"score/{c}" for c in classes]].to_numpy()
    keep = truth.any(axis=0) & ~truth.all(axis=0)
    assert m["test/macro_map"] == pytest.approx(average_precision_score(truth[:, keep], scores[:, keep]), abs=1e-9)
    assert m["test/macro_auroc"] == pytest.approx(roc_auc_score(truth[:, keep], scores[:, keep]), abs=1e-9)
    thresholds = np.array([m[f"head/threshold/{c}"] for c in classes])
    expected = f1_score(truth, scores > thresholds, average=None, zero_division=0)
    present = truth.any(axis=0) | (scores > thresholds).any(axis=0)
    assert m["test/tuned_macro_f1"] == pytest.approx(expected[present].mean(), abs=1e-9)
    assert 0 < m["test/macro_auroc"] <= 1 and "test/protein_macro_map" in m


def test_tuned_thresholds_maximise_each_classs_f1_on_the_rows_given():
    from xferlab.metrics import tuned_thresholds

    labels = np.array([[1, 0], [1, 0], [0, 1], [0, 0], [1, 1]], dtype=float)
    scores = np.array([[0.9, 0.2], [0.3, 0.1], [0.35, 0.8], [0.1, 0.6], [0.2, 0.05]])
    t = tuned_thresholds(labels, scores)
    for k in range(2):
        best = max(f1_score(labels[:, k], scores[:, k] > c, zero_division=0) for c in np.r_[scores[:, k], 1.0])
        assert f1_score(labels[:, k], scores[:, k] > t[k], zero_division=0) == pytest.approx(best)
    assert tuned_thresholds(np.zeros((3, 1)), np.full((3, 1), 0.7)).tolist() == [1.0]  # no positive: never predicted


def test_split_from_the_store(job_config, tmp_path):
    from tests.conftest import write_store
    from xferlab.data.store import ImageStore, StoreWriter

    base = write_store(tmp_path / "base.zarr", n_per_class=10, classes=("a", "b"), size=32)
    samples = base.samples.copy()
    samples["split"] = [i % 3 for i in range(len(samples))]  # a split that ignores targets
    with StoreWriter(tmp_path / "split.zarr", n_samples=len(base), channel_names=base.channel_names,
                     image_size=base.image_size, dtype=base.images.dtype, classes=base.classes) as writer:
        writer.append(base.read(0, len(base)))
        writer.write_samples(samples)
    store = ImageStore(tmp_path / "split.zarr")
    result = run_job(job_config("dataset=store", f"dataset.path={store.path}", "split.source=store"))
    assert result.metrics["n_test"] == int((samples["split"] == 2).sum())
    with pytest.raises(ValueError, match="no `split` column"):
        run_job(job_config("dataset=store", f"dataset.path={base.path}", "split.source=store"))


def test_channelwise_and_last4_run_end_to_end(job_config):
    result = run_job(job_config("channels=channelwise", "backbone.features=last4", "backbone.model_kwargs.depth=4"))
    info = json.loads((result.run_dir / "run_info.json").read_text())
    import zarr

    cache = zarr.open_group(info["cache_path"], mode="r")
    assert cache["embeddings"].shape[1] == 2 * 4 * 192  # two channel views x four CLS tokens
    assert result.metrics["channels"] == "channelwise"


def test_label_fractions_are_nested_per_class_and_keep_val_and_test(tmp_path):
    from tests.conftest import write_store
    from xferlab.data.splits import TEST, TRAIN, VAL, grouped_split
    from xferlab.data.splits import subsample_training

    store = write_store(tmp_path / "s.zarr", n_per_class=20, classes=("a", "b", "c"), size=8)
    split = grouped_split(store.samples["target"].to_numpy(), store.labels, seed=0)
    targets = store.samples["target"].to_numpy()
    kept = {}
    for f in (0.01, 0.1, 0.5, 1.0):
        sub = subsample_training(split, targets, store.labels, f, seed=0)
        assert np.array_equal(sub == VAL, split == VAL) and np.array_equal(sub == TEST, split == TEST)
        kept[f] = set(targets[sub == TRAIN])
        for cls in range(3):
            assert len(set(targets[(sub == TRAIN) & (store.labels == cls)])) >= 1
    assert kept[0.01] <= kept[0.1] <= kept[0.5] <= kept[1.0]
    assert len(kept[0.01]) == 3 and len(kept[1.0]) == len(set(targets[split == TRAIN]))
    with pytest.raises(ValueError, match="label_fraction"):
        subsample_training(split, targets, store.labels, 0.0, seed=0)


def test_mlp_grid_with_class_weights_and_a_label_fraction(job_config):
    result = run_job(job_config("head=mlp", "head.class_weights=balanced", "label_fraction=0.5",
                                "head.grid.lr=0.01", "head.grid.weight_decay=[0.0,0.01]"))
    m = result.metrics
    assert m["head"] == "mlp" and m["label_fraction"] == 0.5 and m["head/grid_size"] == 2
    assert {"grid/lr=0.01,wd=0/val/macro_f1", "grid/lr=0.01,wd=0.01/val/macro_f1"} <= set(m)
    assert 0 <= m["test/macro_f1"] <= 1


def test_a_finished_job_is_skipped_unless_forced(job_config, tmp_path):
    cfg = job_config()
    first = run_job(cfg)
    assert not first.info.get("skipped")
    again = run_job(cfg)
    assert again.info.get("skipped") and again.metrics == first.metrics
    forced = run_job(job_config("force=true"))
    assert not forced.info.get("skipped") and forced.metrics["test/macro_f1"] == first.metrics["test/macro_f1"]


def test_paper_experiment_stops_at_once_listing_missing_files(tmp_path):
    proc = run_cli(["-m", "experiment=paper"], cwd=tmp_path, env_extra={"XFERLAB_WEIGHTS": str(tmp_path / "w")})
    assert proc.returncode != 0
    err = proc.stderr + proc.stdout
    for needed in ("dino_deitsmall16_pretrain.pth", "dino_vitbase8_pretrain.pth", "DINO_FOV_checkpoint.pth",
                   "opencell_dino.pth", "dataset.root=None"):
        assert needed in err, needed
    assert not list(tmp_path.glob("outputs/sweeps/paper/*/*/metrics.json"))


def test_knn_head_scores_every_k_from_one_search(job_config):
    result = run_job(job_config("head=knn", "head.ks=[1,3,5]"))
    m = result.metrics
    for k in (1, 3, 5):
        assert 0 <= m[f"knn/k={k}/test/macro_f1"] <= 1
    assert m["knn_k"] in (1, 3, 5) and m["test/macro_f1"] == m[f"knn/k={m['knn_k']}/test/macro_f1"]
    predictions = pd.read_csv(result.run_dir / "predictions.csv")
    assert m["test/macro_f1"] == pytest.approx(f1_score(predictions["label"], predictions["pred"], average="macro"))


def test_knn_votes_by_hand():
    from xferlab.heads.knn import knn_scores

    bank = np.array([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9], [0.2, 0.8]])
    labels = np.array([0, 0, 1, 1, 1])
    scores = knn_scores(bank, labels, np.array([[1.0, 0.05]]), ks=[1, 5], num_classes=2)
    assert scores[1].argmax() == 0 and scores[5].argmax() == 1  # 2 votes vs 3


def test_finetuning_trains_a_copy_of_the_backbone(job_config):
    result = run_job(job_config("head=finetune", "head.max_epochs=2", "head.batch_size=32"))
    assert result.metrics["head"] == "finetune" and result.metrics["embedding_cache_key"] is None
    info = json.loads((result.run_dir / "run_info.json").read_text())
    assert info["backbone_sha256_after"] == result.metrics["weights_sha256"]  # the job's backbone stays frozen
    ckpt = torch.load(info["best_checkpoint"], map_location="cpu", weights_only=False)
    tuned = {k[len("backbone.model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("backbone.model.")}
    frozen = result.backbone.model.state_dict()
    assert tuned and any(not torch.equal(tuned[k], frozen[k]) for k in frozen)


def test_layerwise_learning_rates_decay_towards_the_input():
    from xferlab.backbones.registry import build_backbone
    from xferlab.heads.finetune import layerwise_groups

    bb = build_backbone(name="t", arch="vit_tiny_patch16_224", in_channels=["a"], init="random", preprocess={},
                        model_kwargs={"img_size": 16, "patch_size": 8, "depth": 3})
    bb.model.requires_grad_(True)
    groups = layerwise_groups(bb.model, backbone_lr=1.0, decay=0.5, weight_decay=0.05)
    by_param = {id(p): g["lr"] for g in groups for p in g["params"]}
    m = bb.model
    assert by_param[id(m.norm.weight)] == 1.0
    assert by_param[id(m.blocks[2].attn.qkv.weight)] == 0.5
    assert by_param[id(m.blocks[0].attn.qkv.weight)] == 0.125
    assert by_param[id(m.patch_embed.proj.weight)] == 0.0625
    assert all(g["weight_decay"] == 0.0 for g in groups if any(p.ndim <= 1 for p in g["params"]))


def store_with_split(path, test_classes=("a", "b"), train_classes=("a", "b", "c")):
    """Classes a, b, c with 6 targets (2 crops each) and a `split` column: per class, targets 0-3
    train (if the class is in `train_classes`, else val), 4 val, 5 test (if in `test_classes`, else val)."""
    from tests.conftest import write_store
    from xferlab.data.store import ImageStore, StoreWriter

    base = write_store(path.with_name("base-" + path.name), n_per_class=6, classes=("a", "b", "c"), size=32)
    samples = base.samples.copy()
    cls, t = samples["target"].str[0], samples["target"].str[1:].astype(int)
    split = np.where(t < 4, 0, np.where(t == 4, 1, 2))
    split = np.where((split == 0) & ~cls.isin(train_classes), 1, split)
    samples["split"] = np.where((split == 2) & ~cls.isin(test_classes), 1, split)
    with StoreWriter(path, n_samples=len(base), channel_names=base.channel_names, image_size=base.image_size,
                     dtype=base.images.dtype, classes=base.classes) as writer:
        writer.append(base.read(0, len(base)))
        writer.write_samples(samples)
    return ImageStore(path)


def test_macro_f1_over_present_or_all_classes_when_a_class_is_absent_from_test(job_config, tmp_path):
    """Class c has training and validation samples but none in test. `metrics.average_over=present`
    (default) averages over the classes with a test sample or a prediction, `all` over all three
    (c scoring 0 unless predicted); kNN and the head grid follow the setting, which metrics.json records."""
    store = store_with_split(tmp_path / "s.zarr")
    data = ["dataset=store", f"dataset.path={store.path}", "split.source=store"]
    for head, average_over in (("head=knn", "present"), ("head=knn", "all"), ("head=linear", "all")):
        result = run_job(job_config(*data, head, f"metrics.average_over={average_over}", "force=true"))
        predictions = pd.read_csv(result.run_dir / "predictions.csv")
        assert "c" not in set(predictions["label_name"])
        labels = range(3) if average_over == "all" else None
        expected = f1_score(predictions["label"], predictions["pred"], labels=labels, average="macro", zero_division=0)
        assert result.metrics["test/macro_f1"] == pytest.approx(expected, abs=1e-6), (head, average_over)
        assert result.metrics["macro_f1_average_over"] == average_over
    with pytest.raises(ValueError, match="metrics.average_over='most'; choose one of"):
        run_job(job_config(*data, "metrics.average_over=most"))


def test_a_class_without_training_samples_is_refused(job_config, tmp_path):
    store = store_with_split(tmp_path / "s.zarr", test_classes=("a", "b", "c"), train_classes=("a", "b"))
    with pytest.raises(ValueError, match=r"class\(es\) \['c \(val 10, test 2\)'\] have no training sample") as err:
        run_job(job_config("dataset=store", f"dataset.path={store.path}", "split.source=store"))
    assert str(store.path) in str(err.value) and "fix the store's split column" in str(err.value)


@pytest.mark.parametrize("missing", ["network", "credentials"])
def test_wandb_online_without_network_or_credentials_goes_offline_with_one_warning_and_keeps_the_results(
        job_config, monkeypatch, tmp_path, missing):
    import warnings

    import wandb

    if missing == "network":
        monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # credentials, but the server cannot be reached
    else:
        monkeypatch.delenv("WANDB_API_KEY", raising=False)
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
        monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    init = wandb.init

    def unreachable(mode, **kwargs):
        if mode == "online":
            raise wandb.errors.CommError("could not reach api.wandb.ai")
        return init(mode=mode, **kwargs)

    monkeypatch.setattr(wandb, "init", unreachable)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_job(job_config("logger=wandb", "logger.mode=online"))
    ours = [w for w in caught if "W&B" in str(w.message)]
    assert len(ours) == 1 and "logging offline instead" in str(ours[0].message)
    assert ("no W&B credentials" in str(ours[0].message)) == (missing == "credentials")
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["test/macro_f1"] == result.metrics["test/macro_f1"]
    for name in ("predictions.csv", "config.yaml", "run_info.json", "split_targets.json", "csv/metrics.csv"):
        assert (result.run_dir / name).exists(), name
    assert list((result.run_dir / "wandb").glob("offline-run-*"))  # to `wandb sync` later


def test_fine_tuning_inputs_refuse_nan_pixels_naming_the_rows(tmp_path):
    """Fine-tuning preprocesses images itself (no extraction); NaN pixels stop it the same way."""
    import zarr

    from tests.conftest import write_store
    from xferlab.backbones.channels import NaturalMapping
    from xferlab.backbones.preprocess import Preprocessor
    from xferlab.data.store import ImageStore, StoreError
    from xferlab.runtime.integrity import write_manifest
    from xferlab.embeddings.inputs import preprocessed_images

    store = write_store(tmp_path / "f.zarr", dtype="float32")
    zarr.open_array(store.path / "images", mode="r+")[5, 0, 0, 0] = np.inf
    write_manifest(store.path)  # as a writer that let it through would have recorded it
    store = ImageStore(store.path)
    adapter = NaturalMapping("natural", store.channel_names, store.channel_names)
    split = np.zeros(len(store), dtype=np.int8)
    with pytest.raises(StoreError, match=r"row\(s\) \[5\] \(sample id\(s\) \['a2_1'\]\) give NaN or infinite"):
        preprocessed_images(store, split, Preprocessor(None, "zscore"), adapter)


@pytest.mark.parametrize("overrides,match", [
    (["seed=null"], "seed=None: every job needs an integer seed"),
    (["head=finetune", "dataset=synthcell_tiny", "dataset.labels.rule=multilabel"], "head=finetune trains on single-label"),
    (["head=knn", "dataset=synthcell_tiny", "dataset.labels.rule=multilabel"], "head=knn votes for one class"),
    (["head=centroid", "dataset=synthcell_tiny", "dataset.labels.rule=multilabel"], "head=centroid assigns one class"),
    (["head=finetune", "channels=channelwise"], "head=finetune needs one backbone input per image"),
    (["label_fraction=0"], "label_fraction=0"),
    (["head=knn", "head.ks=[0,5]"], "head.ks=\\[0, 5\\]"),
    (["head=linear_sgd", "head.grid.lr=[0.1,0.1]"], "lists a value twice"),
    (["head.l2=[0.1,0.1]"], "lists a penalty twice"),
    (["~head.path.per_decade"], "head.path=.*a path needs start, stop and per_decade"),
])
def test_incompatible_configs_fail_before_any_store_is_built(job_config, tmp_path, overrides, match):
    root = tmp_path / "fresh"
    with pytest.raises(ValueError, match=match):
        run_job(job_config(*overrides, root=root))
    assert not root.exists() and not (tmp_path / "run").exists()  # no store, no cache, no run folder


def test_whole_fields_matched_with_tiles_are_seen_whole_and_the_job_says_so(tmp_path, monkeypatch):
    """mode=fov on real fields, the backbone's pretraining pixel size read from its checkpoint,
    fit=tiles: every field becomes one embedding of its tiles, and the job records that all of each
    field was seen, in how many inputs."""
    from tests.checks.test_inputs import opencell_checkpoint, opencell_root
    from tests.conftest import compose_config
    from xferlab.job import check_config, load_inputs

    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path / "weights"))
    (tmp_path / "weights").mkdir()
    opencell_root(tmp_path / "opencell")
    # fields of 1024 px at 0.206 um stored at 256 px (0.824 um); pretrained at 0.412 um: 512 px, 8 x 8 tiles of 64
    opencell_checkpoint(tmp_path / "weights" / "opencell_dino.pth", {"input_pixel_size_um": 0.412, "input_size": 64})
    cfg = compose_config(["experiment=smoke", "logger=csv", "dataset=opencell_raw", f"dataset.root={tmp_path / 'opencell'}",
                          "dataset.mode=fov", "dataset.size=256", "backbone=opencell", "backbone.preprocess.scale=match",
                          "backbone.preprocess.fit=tiles", "backbone.preprocess.input_size=64",
                          f"paths.output_root={tmp_path / 'out'}", f"paths.output_dir={tmp_path / 'run'}"])
    inputs = load_inputs(cfg, check_config(cfg))
    assert inputs.features.shape == (3, 32) and np.isfinite(inputs.features).all()
    assert inputs.extract_info["fit"] == "tiles" and inputs.extract_info["image_share_seen"] == 1.0
    assert inputs.extract_info["inputs_per_image"] == 64 and inputs.extract_info["input_pixel_size_um"] == 0.412
