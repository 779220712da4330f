"""`python -m xferlab.pretrain` end to end on a tiny store: DINO layout, training split only,
strict loading as a backbone, resumption."""

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import compose_config, kill_when_stalled
from xferlab.runtime.building import build
from xferlab.ssl.run import run_pretraining

TINY = ["dataset=synthcell_tiny", "dataset.workers=1", "experiment=smoke", "logger=csv", "ssl.batch_size=16",
        "ssl.global_size=32", "ssl.local_size=16", "ssl.n_local=2", "ssl.out_dim=64", "ssl.head_hidden=32",
        "ssl.bottleneck=16", "max_images=null", "ssl.knn_max_images=100"]


def pretrain_cfg(root, *overrides):
    return compose_config(TINY + [f"paths.output_root={root}", "paths.output_dir=/tmp/unused", *overrides],
                          config_name="pretrain")


def test_pretraining_writes_a_dino_checkpoint_that_loads_as_a_backbone(tmp_path):
    cfg = pretrain_cfg(tmp_path, "ssl.epochs=1", "name=tiny")
    result = run_pretraining(cfg)
    from xferlab.backbones.checkpoints import read_file

    raw = read_file(result["checkpoint"])
    assert {"teacher", "student", "optimizer", "epoch", "args", "dino_loss"} <= set(raw)
    assert all(k.startswith(("backbone.", "head.")) for k in raw["teacher"])
    assert all(k.startswith(("module.backbone.", "module.head.")) for k in raw["student"])
    assert raw["epoch"] == 1
    # only training-split images of the labelled store are used
    from xferlab.data.splits import TRAIN, grouped_split

    store = build(cfg.dataset).open(cfg.paths.data_dir)
    split = grouped_split(store.samples["target"].to_numpy(), store.labels, seed=0)
    assert result["n_images"] == int((split == TRAIN).sum())
    assert 0 <= result["val/knn_accuracy"] <= 1 and result["train/teacher_entropy"] > 0
    backbone_cfg = compose_config(["backbone=opencell", f"backbone.weights={result['checkpoint']}",
                                   "backbone.preprocess.input_size=32", "paths.output_dir=/tmp/x"])
    backbone = build(backbone_cfg.backbone)
    teacher = {k[len("backbone."):]: v for k, v in raw["teacher"].items() if k.startswith("backbone.")}
    for name, value in backbone.model.state_dict().items():
        assert torch.equal(value, teacher[name]), name
    metrics = json.loads((tmp_path / "pretrain" / "tiny" / "metrics.json").read_text())
    assert metrics["data_fingerprint"] == store.fingerprint


# A few steps on ToyCell: enough to prove determinism and exact resumption, cheap enough to run twice.
FEW = [o for o in TINY if not o.startswith("dataset")] + [
    "dataset=toycell_tiny", "max_images=16", "ssl.batch_size=8", "ssl.global_size=16", "ssl.local_size=8",
    "ssl.knn_max_images=16", "ssl.epochs=2", "name=few"]


def few_cfg(root, data_dir, *overrides):
    return compose_config(FEW + [f"paths.output_root={root}", f"paths.data_dir={data_dir}", "paths.output_dir=/tmp/unused",
                                 *overrides], config_name="pretrain")


def assert_same_result(a: dict, b: dict) -> None:
    """Bit-identical teacher, student, loss centre and optimizer state, and equal metrics."""
    from xferlab.backbones.checkpoints import read_file

    ca, cb = read_file(a["checkpoint"]), read_file(b["checkpoint"])
    assert ca["epoch"] == cb["epoch"]
    for part in ("teacher", "student"):
        assert ca[part].keys() == cb[part].keys()
        for key in ca[part]:
            assert torch.equal(ca[part][key], cb[part][key]), (part, key)
    assert torch.equal(ca["dino_loss"]["center"], cb["dino_loss"]["center"])
    sa, sb = ca["optimizer"]["state"], cb["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])
    ignore = ("seconds", "checkpoint")
    assert {k: v for k, v in a.items() if k not in ignore} == {k: v for k, v in b.items() if k not in ignore}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, shared_root):
    return run_pretraining(few_cfg(tmp_path_factory.mktemp("uninterrupted"), shared_root / "data"))


def test_two_pretraining_runs_give_identical_weights_and_metrics(uninterrupted, tmp_path, shared_root):
    again = run_pretraining(few_cfg(tmp_path, shared_root / "data"))
    assert_same_result(again, uninterrupted)
    assert "val/knn_accuracy" in again and again["epochs"] == 2


def test_pretraining_killed_while_writing_a_checkpoint_resumes_to_the_same_weights(uninterrupted, tmp_path,
                                                                                  shared_root, caplog):
    """Killed after writing epoch 2's `last.ckpt` under its temporary name, before the rename: the
    file in place is still epoch 1's, intact. The rerun removes the temporary file, resumes from
    epoch 1 and ends bit-identical to the run that never stopped (the data order of epoch 2 is drawn
    from (seed, epoch), not from a generator the checkpoint does not hold)."""
    out = tmp_path / "pretrain" / "few"
    args = [*FEW, f"paths.output_root={tmp_path}", f"paths.data_dir={shared_root / 'data'}"]
    kill_when_stalled("xferlab.pretrain", args, cwd=tmp_path, stall_at="checkpoint.before_replace@2")
    (partial,) = out.glob(".last.ckpt.tmp-*")
    assert torch.load(out / "last.ckpt", weights_only=False, map_location="cpu")["epoch"] == 0  # epoch 1's
    assert not (out / "metrics.json").exists()
    with caplog.at_level("INFO"):
        resumed = run_pretraining(few_cfg(tmp_path, shared_root / "data"))
    assert f"removing {partial}" in caplog.text and f"resuming from {out / 'last.ckpt'}" in caplog.text
    assert not partial.exists()
    assert_same_result(resumed, uninterrupted)


def test_a_run_killed_after_its_last_checkpoint_writes_the_same_metrics_when_rerun(uninterrupted, shared_root):
    """What a kill between the final `last.ckpt` and `metrics.json` leaves; the rerun has no epoch
    left to train and takes the final epoch's metrics from the checkpoint."""
    out = Path(uninterrupted["checkpoint"]).parent
    (out / "metrics.json").unlink()
    rerun = run_pretraining(few_cfg(out.parents[1], shared_root / "data"))
    assert json.loads((out / "metrics.json").read_text())["train/loss"] == uninterrupted["train/loss"]
    assert_same_result(rerun, uninterrupted)


def test_pretraining_resumes_from_its_last_checkpoint(tmp_path, shared_root):
    run_pretraining(few_cfg(tmp_path, shared_root / "data", "ssl.epochs=1", "name=r"))
    from xferlab.backbones.checkpoints import read_file

    first = read_file(tmp_path / "pretrain" / "r" / "checkpoint.pth")
    result = run_pretraining(few_cfg(tmp_path, shared_root / "data", "ssl.epochs=2", "name=r"))
    second = read_file(result["checkpoint"])
    assert first["epoch"] == 1 and second["epoch"] == 2
    assert (tmp_path / "pretrain" / "r" / "last.ckpt").exists()
    for attempt in ("attempt0", "attempt1"):  # the resumed run keeps the first run's log
        assert (tmp_path / "pretrain" / "r" / "csv" / attempt / "metrics.csv").exists(), attempt


def test_a_second_run_into_the_same_folder_is_refused(tmp_path):
    from filelock import FileLock

    out = tmp_path / "pretrain" / "few"
    out.mkdir(parents=True)
    with FileLock(str(out / ".pretrain.lock")):  # as a live run holds it
        with pytest.raises(RuntimeError, match=f"another pretraining run is writing to {out}"):
            run_pretraining(few_cfg(tmp_path, tmp_path / "data"))
    assert not (tmp_path / "data").exists()  # refused before any work


@pytest.mark.parametrize("override", ["backbone=synth_opencell", "backbone.weights=some.pth"])
def test_a_backbone_config_that_names_weights_is_refused_before_any_work(tmp_path, override):
    """Pretraining starts from random weights: a config naming weights would be silently ignored."""
    with pytest.raises(ValueError, match="pretraining starts from random weights"):
        run_pretraining(pretrain_cfg(tmp_path, override))
    assert not (tmp_path / "data").exists()


def test_a_damaged_store_chunk_stops_pretraining_and_nothing_is_written(uninterrupted, tmp_path):
    """One flipped bit in a chunk of the store (same size: the quick check on open passes) stops the
    run as the chunk is read, naming it; no checkpoint or metrics are written. Once the store is
    restored, the run gives the same result as a run on an intact store."""
    from xferlab.data.store import StoreDamagedError

    cfg = few_cfg(tmp_path, tmp_path / "data")
    store = build(cfg.dataset).open(cfg.paths.data_dir)
    chunk = store.path / "images" / "c" / "0" / "0" / "0" / "0"
    original = chunk.read_bytes()
    chunk.write_bytes(original[:-9] + bytes([original[-9] ^ 0x02]) + original[-8:])
    with pytest.raises(StoreDamagedError) as err:
        run_pretraining(cfg)
    assert f"{store.path} is a damaged image store: images/c/0/0/0/0 (image chunk 0: rows 0-" in str(err.value)
    out = tmp_path / "pretrain" / "few"
    assert not [p.name for p in out.iterdir() if p.name != ".pretrain.lock"]  # nothing written

    chunk.write_bytes(original)
    assert_same_result(run_pretraining(cfg), uninterrupted)


def test_pretraining_records_the_targets_it_saw_and_evaluation_refuses_seen_test_targets(tmp_path):
    """With `unlabelled=true` the unlabelled targets are pretrained on too; the checkpoint lists every
    target seen. Evaluating on a split whose test targets were seen (another split_seed) is an error
    naming them, before any embedding is extracted; the pretraining's own split passes."""
    from xferlab.backbones.checkpoints import read_file
    from xferlab.data.leakage import SeenTargetsError
    from xferlab.data.splits import TRAIN, grouped_split
    from xferlab.job import check_config, load_inputs

    cfg = pretrain_cfg(tmp_path, "ssl.epochs=1", "name=seen", "unlabelled=true")
    result = run_pretraining(cfg)
    store = build(cfg.dataset).open(cfg.paths.data_dir)
    split = grouped_split(store.samples["target"].to_numpy(), store.labels, seed=0)
    used = (split == TRAIN) | (store.labels < 0)
    assert (store.labels < 0).any() and result["n_images"] == int(used.sum())
    seen = read_file(result["checkpoint"])["xferlab"]["seen"]
    assert seen["targets"] == sorted(set(store.samples["target"].to_numpy()[used].astype(str)))
    assert result["unlabelled"] is True and result["split_seed"] == 0

    def inputs_of(cfg):
        return load_inputs(cfg, check_config(cfg))

    def evaluation(*overrides):
        return compose_config(["dataset=synthcell_tiny", "dataset.workers=1", "experiment=smoke", "logger=csv",
                               "backbone=opencell", f"backbone.weights={result['checkpoint']}",
                               "backbone.preprocess.input_size=32", f"paths.output_root={tmp_path}",
                               f"paths.output_dir={tmp_path / 'run'}", *overrides])

    with pytest.raises(SeenTargetsError, match="test targets of this split"):
        inputs_of(evaluation("split_seed=1"))
    assert not (tmp_path / "cache").exists()  # refused before extracting anything
    inputs = inputs_of(evaluation("split_seed=0"))
    assert len(inputs.features) == len(store)
    assert len(inputs_of(evaluation("split_seed=1", "allow_seen_test_targets=true")).features) == len(store)


def test_an_unlabelled_store_is_watched_on_the_evaluation_domain_and_the_curves_are_kept(tmp_path):
    """SynthCell pretraining images (HPA genes, no labels) have no validation split of their own: the
    kNN monitor scores the teacher on the labelled `monitor` store, through `monitor_channels` (as
    evaluation will feed it), after every epoch; metrics.json keeps each epoch's loss and accuracy."""
    cfg = pretrain_cfg(tmp_path, "ssl.epochs=2", "name=unlab", "dataset=synthcell_pretrain", "dataset.size=32",
                       "dataset.n_targets=40", "dataset.workers=1", "dataset@monitor=synthcell_tiny", "monitor.workers=1",
                       "ssl.head_bn=true")
    result = run_pretraining(cfg)
    assert result["n_images"] == 80 and result["monitor"].startswith("synthcell_tiny (validation split 0")
    assert [c["epoch"] for c in result["curves"]] == [1, 2]
    assert all(0 <= c["val/knn_accuracy"] <= 1 and c["train/loss"] > 0 for c in result["curves"])
    assert result["seen"]["ensg_ids"] and not set(result["seen"]["ensg_ids"]) & set(
        build(cfg.monitor).open(cfg.paths.data_dir).samples["ensg_id"])  # no evaluated protein pretrained on


def test_an_rgb_backbone_is_watched_through_the_colour_map(tmp_path):
    from xferlab.ssl.run import knn_monitor

    overrides = [o for o in TINY if not o.startswith("dataset")] + [
        f"paths.output_root={tmp_path}", "paths.output_dir=/tmp/unused", "name=rgb", "dataset=photos",
        "dataset.n_crops=8", "dataset.size=32", "backbone=random_rgb", "backbone.preprocess.input_size=32",
        "dataset@monitor=synthcell_tiny", "monitor.workers=1", "ssl.knn_max_images=20"]
    cfg = compose_config(overrides, config_name="pretrain")
    store = build(cfg.dataset).open(cfg.paths.data_dir)
    import numpy as np

    knn = knn_monitor(cfg, store, None, np.arange(len(store)), np.array([], dtype=int))
    assert knn["train_images"].shape[1:] == (3, 32, 32) and len(knn["train_images"]) == 20
    red = knn["train_images"][:, 0]
    assert torch.all(red == red.flatten(1)[:, :1, None])  # no dataset channel maps to red: a constant slot
    assert "channels natural" in knn["source"]


@pytest.mark.parametrize("overrides, match", [
    (["channels@monitor_channels=channelwise"], "one view per image"),
    (["dataset@monitor=synthcell_pretrain", "monitor.size=32", "monitor.n_targets=10"], "needs a labelled store"),
])
def test_a_monitor_that_cannot_score_is_refused_by_name(tmp_path, overrides, match):
    import numpy as np

    from xferlab.ssl.run import knn_monitor

    cfg = pretrain_cfg(tmp_path, "name=bad", "dataset=synthcell_pretrain", "dataset.size=32", "dataset.n_targets=10",
                       "dataset@monitor=synthcell_tiny", "monitor.workers=1", *overrides)
    store = build(cfg.dataset).open(cfg.paths.data_dir)
    with pytest.raises(ValueError, match=match):
        knn_monitor(cfg, store, None, np.arange(len(store)), np.array([], dtype=int))
