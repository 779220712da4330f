import lightning as L
import numpy as np
import torch
from functools import partial

from xferlab.data.splits import TEST, TRAIN, VAL
from xferlab.heads.classifier import HeadClassifier
from xferlab.heads.datamodule import EmbeddingDataModule
from xferlab.heads.modules import LinearHead, MLPHead
from xferlab.job import class_weights


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
        result = trainer.test(model, datamodule=data, verbose=False)[0]
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
