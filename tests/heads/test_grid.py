"""The head grid: one pass with summed losses, own lr / weight decay per head, choice on
validation, one test of the chosen head, and what metrics.json gets."""

from __future__ import annotations

import copy
from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from tests.conftest import compose_config
from tests.heads.test_classifier import blobs
from xferlab.data.splits import TEST, TRAIN, VAL
from xferlab.heads.datamodule import EmbeddingDataModule
from xferlab.heads.grid import GridHeadClassifier, setting_name
from xferlab.heads.modules import HeadGrid, LinearHead, MLPHead
from xferlab.heads.training import grid_settings, train_head
from xferlab.metrics import score

CLASSES = ["a", "b", "c"]
make_trainer = partial(L.Trainer, accelerator="cpu", devices=1, deterministic=True)


def fit(heads, settings, data, epochs, optimizer=torch.optim.SGD, patience=100, multilabel=False, classes=CLASSES):
    model = GridHeadClassifier(HeadGrid(heads), settings, classes, partial(optimizer), patience=patience,
                               multilabel=multilabel)
    trainer = make_trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                           enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=data)
    return model, trainer


def head_config(*overrides):
    """The SGD grid's config: `head=linear_sgd` unless an override picks another grid head."""
    head = [] if any(o.startswith("head=") for o in overrides) else ["head=linear_sgd"]
    return compose_config(["paths.output_dir=/tmp/x", *head, *overrides]).head


def test_grid_settings_are_lr_major_and_a_value_is_a_grid_of_one():
    assert grid_settings({"lr": [0.1, 0.3], "weight_decay": [0.0, 1e-4]}) == [
        (0.1, 0.0), (0.1, 1e-4), (0.3, 0.0), (0.3, 1e-4)]
    assert grid_settings({"lr": 0.03, "weight_decay": 0}) == [(0.03, 0.0)]
    assert setting_name((0.001, 0.0001)) == "lr=0.001,wd=0.0001"
    for bad, match in (({"lr": [0.1]}, "head.grid.weight_decay is missing"),
                       ({"lr": [-1.0], "weight_decay": 0}, "non-negative"),
                       ({"lr": [0.1, 0.1], "weight_decay": 0}, "twice"),
                       ({"lr": [], "weight_decay": 0}, "non-negative")):
        with pytest.raises(ValueError, match=match):
            grid_settings(bad)


def test_every_head_gets_its_own_parameter_group():
    heads = [LinearHead(8, 3, norm="none") for _ in range(3)]
    settings = [(0.1, 0.0), (0.3, 1e-4), (1.0, 0.5)]
    model = GridHeadClassifier(HeadGrid(heads), settings, CLASSES, partial(torch.optim.AdamW))
    optimizer = model.configure_optimizers()
    assert len(optimizer.param_groups) == 3
    for group, head, (lr, wd) in zip(optimizer.param_groups, heads, settings):
        assert group["lr"] == lr and group["weight_decay"] == wd
        assert {id(p) for p in group["params"]} == {id(p) for p in head.parameters()}


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_one_pass_with_summed_losses_equals_training_each_head_alone(kind):
    """SGD is sensitive to the loss scale, so averaging instead of summing, a shared learning
    rate or any gradient flowing between heads would break the equality."""
    x, y, split = blobs()
    torch.manual_seed(0)
    build = (lambda: LinearHead(8, 3, norm="none")) if kind == "linear" else (
        lambda: MLPHead(8, 3, hidden_dim=16, dropout=0.0, norm="none"))
    heads = [build() for _ in range(3)]
    inits = [copy.deepcopy(h) for h in heads]
    untrained = [copy.deepcopy(h.state_dict()) for h in heads]
    settings = [(0.05, 0.0), (0.2, 0.01), (0.5, 0.001)]
    together, _ = fit(heads, settings, EmbeddingDataModule(x, y, split, batch_size=32, seed=3), epochs=3)
    for g in range(3):
        alone, _ = fit([inits[g]], [settings[g]], EmbeddingDataModule(x, y, split, batch_size=32, seed=3), epochs=3)
        trained, reference = together.grid.members[g].state_dict(), alone.grid.members[0].state_dict()
        assert trained.keys() == reference.keys()
        for key in trained:
            torch.testing.assert_close(trained[key], reference[key], rtol=1e-5, atol=1e-6)
        assert together.member_best[g] == pytest.approx(alone.member_best[0], abs=1e-9)
        assert any(not torch.equal(trained[key], untrained[g][key]) for key in trained)  # it did train


def test_best_head_is_chosen_on_validation_and_tested_once():
    """Test labels are the flipped validation labels: the head that learns is best on
    validation and worst on test; it must still be the one tested."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 8)).astype(np.float32)
    truth = (x[:, 0] > 0).astype(np.int64)
    split = np.array([TRAIN, TRAIN, VAL, TEST] * 60)
    y = np.where(split == TEST, 1 - truth, truth)
    data = EmbeddingDataModule(x, y, split, batch_size=32, seed=0)
    calls = {"test": 0, "during_fit": 0}
    original = data.test_dataloader

    def counted():
        calls["test"] += 1
        return original()

    data.test_dataloader = counted
    torch.manual_seed(0)
    model, trainer = fit([LinearHead(8, 2, norm="none") for _ in range(2)], [(0.0, 0.0), (0.5, 0.0)], data, epochs=5,
                         optimizer=torch.optim.AdamW, classes=["neg", "pos"])
    calls["during_fit"] = calls["test"]
    trainer.test(model, datamodule=data, verbose=False)
    assert calls == {"test": 1, "during_fit": 0} and model.test_runs == 1
    chosen = model.selection()
    assert chosen["head/lr"] == 0.5
    assert chosen["val/macro_f1"] == max(v for k, v in chosen.items() if k.startswith("grid/")) > 0.9
    assert model.test_metrics["test/macro_f1"] < 0.2
    scores = torch.cat(model.test_scores).numpy()
    rows = torch.cat(model.test_rows).numpy()
    assert model.test_metrics["test/macro_f1"] == pytest.approx(
        f1_score(y[rows], scores.argmax(axis=1), average="macro"), abs=1e-9)


def test_training_stops_when_no_head_beats_the_best_for_patience_epochs():
    x, y, split = blobs()
    data = EmbeddingDataModule(x, y, split, batch_size=32, seed=0)
    model, trainer = fit([LinearHead(8, 3, norm="none") for _ in range(2)], [(0.0, 0.0), (0.0, 0.1)], data,
                         epochs=50, patience=3)
    assert model.best.epoch == 0 and trainer.current_epoch == 4  # epochs 0..3: no gain after epoch 0


def test_train_head_records_the_choice_and_every_heads_best(tmp_path):
    x, y, split = blobs()
    cfg = head_config("head.grid.lr=[0.01,0.1]", "head.grid.weight_decay=[0.0,0.001]", "head.max_epochs=8")
    result = train_head(cfg, x, y, split, CLASSES, multilabel=False, seed=0, make_trainer=make_trainer)
    m = {**score(y[result.rows], result.scores, classes=CLASSES, multilabel=False), **result.selection}
    names = ["lr=0.01,wd=0", "lr=0.01,wd=0.001", "lr=0.1,wd=0", "lr=0.1,wd=0.001"]
    assert {f"grid/{n}/val/macro_f1" for n in names} <= set(m)
    assert {"test/macro_f1", "test/accuracy", "test/f1/a", "test/f1/b", "test/f1/c", "val/macro_f1", "head/lr",
            "head/weight_decay", "head/best_epoch", "head/grid_size"} <= set(m)
    assert m["head/grid_size"] == 4 and 0 <= m["head/best_epoch"] < result.info["epochs"]
    winner = setting_name((m["head/lr"], m["head/weight_decay"]))
    assert m[f"grid/{winner}/val/macro_f1"] == m["val/macro_f1"] == max(m[f"grid/{n}/val/macro_f1"] for n in names)
    assert m["test/macro_f1"] > 0.9
    # the returned head works on raw embeddings and gives the test scores
    with torch.no_grad():
        scores = result.module(torch.from_numpy(x[result.rows])).softmax(dim=1).numpy()
    np.testing.assert_allclose(scores, result.scores, atol=1e-5)
    assert result.info["head_sha256_before"] != result.info["head_sha256_after"]


def test_train_head_is_deterministic_and_follows_the_seed():
    x, y, split = blobs()
    cfg = head_config("head=mlp", "head.max_epochs=4")
    runs = [train_head(cfg, x, y, split, CLASSES, multilabel=False, seed=s, make_trainer=make_trainer) for s in (0, 0, 1)]
    assert runs[0].selection == runs[1].selection
    assert runs[0].info["head_sha256_after"] == runs[1].info["head_sha256_after"]
    np.testing.assert_array_equal(runs[0].scores, runs[1].scores)
    assert runs[0].info["head_sha256_before"] != runs[2].info["head_sha256_before"]


def test_multilabel_grid_with_class_weights():
    x, y, split = blobs(n=400, k=3)
    multi = np.eye(3, dtype=np.int64)[y]
    multi[::4, (y[::4] + 1) % 3] = 1  # some samples carry a second label
    cfg = head_config("head.class_weights=balanced", "head.max_epochs=10")
    result = train_head(cfg, x, multi, split, CLASSES, multilabel=True, seed=0, make_trainer=make_trainer)
    truth, pred = multi[result.rows], result.scores > 0.5
    m = score(truth, result.scores, classes=CLASSES, multilabel=True)
    assert m["test/macro_f1"] == pytest.approx(f1_score(truth, pred, average="macro", zero_division=0))
    assert m["test/accuracy"] == pytest.approx((truth == pred).all(axis=1).mean())
    assert m["test/macro_f1"] > 0.7


def test_losses_are_each_heads_own_weighted_mean():
    torch.manual_seed(0)
    logits, y = torch.randn(3, 10, 4), torch.randint(0, 4, (10,))
    weights = torch.tensor([0.5, 1.0, 2.0, 0.0])
    model = GridHeadClassifier(HeadGrid([LinearHead(2, 4) for _ in range(3)]), [(0.1, 0.0), (0.2, 0.0), (0.3, 0.0)],
                               list("abcd"), partial(torch.optim.AdamW), class_weights=weights)
    expected = torch.stack([torch.nn.functional.cross_entropy(logits[g], y, weight=weights) for g in range(3)])
    torch.testing.assert_close(model.losses(logits, y), expected)
    model.multilabel = True
    multi = torch.randint(0, 2, (10, 4))
    expected = torch.stack([torch.nn.functional.binary_cross_entropy_with_logits(logits[g], multi.float(),
                                                                                pos_weight=weights) for g in range(3)])
    torch.testing.assert_close(model.losses(logits, multi), expected)
