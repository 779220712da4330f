from functools import partial

import lightning as L
import numpy as np
import pytest
import torch

from xferlab.data.splits import TEST, TRAIN, VAL
from xferlab.heads.classifier import HeadClassifier
from xferlab.heads.datamodule import EmbeddingDataModule
from xferlab.heads.modules import FeatureNorm, HeadGrid, LinearHead, MLPHead
from xferlab.metrics import score
from xferlab.heads.base import class_weights


def blobs(n=300, k=3, d=8, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    centres = rng.normal(0, 3, (k, d))
    x = centres[labels] + rng.normal(0, 1, (n, d))
    split = np.where(np.arange(n) % 5 == 0, TEST, np.where(np.arange(n) % 5 == 1, VAL, TRAIN))
    return x.astype(np.float32), labels, split


def test_linear_and_mlp_heads_learn_separable_data():
    x, y, split = blobs()
    for head in (LinearHead(8, 3), MLPHead(8, 3, hidden_dim=32)):
        L.seed_everything(0, verbose=False)
        data = EmbeddingDataModule(x, y, split, batch_size=32, seed=0)
        head.norm.fit(data.train_features())
        model = HeadClassifier(head, ["a", "b", "c"], partial(torch.optim.AdamW, lr=1e-2))
        trainer = L.Trainer(max_epochs=20, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                            enable_model_summary=False)
        trainer.fit(model, datamodule=data)
        trainer.test(model, datamodule=data, verbose=False)
        rows = torch.cat(model.test_rows).numpy()
        result = score(y[rows], torch.cat(model.test_scores).numpy(), classes=["a", "b", "c"], multilabel=False)
        assert np.array_equal(np.sort(rows), np.nonzero(split == TEST)[0])
        assert result["test/macro_f1"] > 0.9
        assert {"test/f1/a", "test/f1/b", "test/f1/c", "test/accuracy"} <= set(result)


def test_feature_norm_uses_training_statistics():
    head = LinearHead(2, 2)
    head.norm.fit(torch.tensor([[0.0, 10.0], [2.0, 30.0]]))
    torch.testing.assert_close(head.norm(torch.tensor([[1.0, 20.0]])), torch.zeros(1, 2))


def test_balanced_class_weights():
    w = class_weights(np.array([0, 0, 0, 1]), 3, "balanced")
    torch.testing.assert_close(w, torch.tensor([4 / 9, 4 / 3, 0.0]))
    assert class_weights(np.array([0, 1]), 2, "none") is None


def test_data_order_follows_the_seed():
    x, y, split = blobs()
    order = lambda seed: next(iter(EmbeddingDataModule(x, y, split, 16, seed).train_dataloader()))[0]  # noqa: E731
    assert torch.equal(order(0), order(0))
    assert not torch.equal(order(0), order(1))


def test_whitening_decorrelates_the_training_features():
    rng = np.random.default_rng(0)
    mixed = rng.normal(size=(2000, 6)) @ rng.normal(size=(6, 6)) * np.array([1, 10, 100, 1, 1, 1]) + 5
    x = torch.tensor(mixed, dtype=torch.float32)
    norm = FeatureNorm(6, whiten=True, shrinkage=1e-6)
    norm.fit(x)
    z = norm(x).double()
    torch.testing.assert_close(z.mean(dim=0), torch.zeros(6, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.cov(z.T), torch.eye(6, dtype=torch.float64), atol=1e-3, rtol=0)
    shrunk = FeatureNorm(6, whiten=True, shrinkage=1.0)
    shrunk.fit(x)
    assert torch.cov(shrunk(x).double().T).diagonal().max() < 1  # shrinkage damps, never amplifies past 1
    with pytest.raises(ValueError, match="shrinkage"):
        FeatureNorm(6, whiten=True, shrinkage=0.0)
    with pytest.raises(ValueError, match="norm='zscore'"):
        LinearHead(6, 2, norm="zscore")


def test_grid_forward_equals_each_head_and_rebuilds_standalone_heads():
    torch.manual_seed(0)
    x = torch.randn(20, 8) * 3 + 1
    for build in (lambda: LinearHead(8, 3, norm="whiten"), lambda: MLPHead(8, 3, hidden_dim=16, norm="standardize")):
        grid = HeadGrid([build() for _ in range(3)])
        grid.norm.fit(x)
        z = grid.normalise(x)
        grid.eval()
        out = grid(z)
        assert out.shape == (3, 20, 3)
        for g, member in enumerate(grid.members):
            torch.testing.assert_close(out[g], member(z))
            standalone = grid.head(g).eval()
            torch.testing.assert_close(standalone(x), out[g], atol=1e-5, rtol=1e-5)
            assert isinstance(standalone.norm, FeatureNorm)


def test_batches_cover_each_training_row_once_per_epoch():
    x, y, split = blobs()
    loader = EmbeddingDataModule(x, y, split, batch_size=16, seed=0).train_dataloader()
    epochs = [torch.cat([rows for rows, _, _ in loader]) for _ in range(2)]
    train_rows = np.nonzero(split == TRAIN)[0]
    for rows in epochs:
        assert sorted(rows.tolist()) == train_rows.tolist()
    assert not torch.equal(epochs[0], epochs[1])  # a fresh order every epoch
    assert len(loader) == -(-len(train_rows) // 16)
    rows, features, labels = next(iter(loader))
    torch.testing.assert_close(features, torch.from_numpy(x[rows.numpy()]))
    assert torch.equal(labels, torch.from_numpy(y[rows.numpy()]))


@pytest.mark.parametrize("whiten", [False, True])
def test_constant_features_normalise_to_finite_values(whiten):
    """Embeddings with zero variance in some (or every) dimension: std is clamped, whitening shrunk."""
    norm = FeatureNorm(3, whiten=whiten)
    norm.fit(torch.tensor([[1.0, 5.0, 0.0], [1.0, 6.0, 0.0], [1.0, 7.0, 0.0]]))
    assert torch.isfinite(norm(torch.tensor([[1.0, 6.0, 0.0], [2.0, 5.0, 1.0]]))).all()
    norm.fit(torch.ones(4, 3))
    assert torch.isfinite(norm(torch.ones(2, 3))).all()
