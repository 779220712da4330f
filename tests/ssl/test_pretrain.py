"""`python -m xferlab.pretrain` end to end on a tiny store: DINO layout, training split only,
strict loading as a backbone, resumption."""

import json

import torch

from tests.conftest import compose_config
from xferlab.building import build
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


def test_pretraining_resumes_from_its_last_checkpoint(tmp_path):
    run_pretraining(pretrain_cfg(tmp_path, "ssl.epochs=1", "name=r"))
    from xferlab.backbones.checkpoints import read_file

    first = read_file(tmp_path / "pretrain" / "r" / "checkpoint.pth")
    result = run_pretraining(pretrain_cfg(tmp_path, "ssl.epochs=2", "name=r"))
    second = read_file(result["checkpoint"])
    assert first["epoch"] == 1 and second["epoch"] == 2
    assert (tmp_path / "pretrain" / "r" / "last.ckpt").exists()
    for attempt in ("attempt0", "attempt1"):  # the resumed run keeps the first run's log
        assert (tmp_path / "pretrain" / "r" / "csv" / attempt / "metrics.csv").exists(), attempt
