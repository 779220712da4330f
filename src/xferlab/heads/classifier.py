"""The head-training LightningModule: cross-entropy on cached embeddings, scored by macro F1."""

from __future__ import annotations

from typing import Callable, Sequence

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score


class HeadClassifier(L.LightningModule):
    """Trains an injected head module. Logs `train/loss`, `val/macro_f1`, `val/accuracy` and, on
    test, `test/macro_f1`, `test/accuracy` and `test/f1/<class>`; keeps the test scores for the
    predictions file."""

    def __init__(
        self,
        head: nn.Module,
        class_names: Sequence[str],
        optimizer: Callable[..., torch.optim.Optimizer],
        class_weights: torch.Tensor | None = None,
    ):
        super().__init__()
        self.head = head
        self.class_names = list(class_names)
        self.optimizer_factory = optimizer
        k = len(self.class_names)
        self.register_buffer("class_weights", class_weights if class_weights is not None else torch.ones(k))
        self.val_f1 = MulticlassF1Score(k, average="macro")
        self.val_acc = MulticlassAccuracy(k, average="micro")
        self.test_f1 = MulticlassF1Score(k, average="macro")
        self.test_acc = MulticlassAccuracy(k, average="micro")
        self.test_f1_per_class = MulticlassF1Score(k, average="none")
        self.test_rows: list[torch.Tensor] = []
        self.test_scores: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def training_step(self, batch, batch_idx):
        _, x, y = batch
        loss = nn.functional.cross_entropy(self(x), y, weight=self.class_weights)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def validation_step(self, batch, batch_idx):
        _, x, y = batch
        logits = self(x)
        self.log("val/loss", nn.functional.cross_entropy(logits, y, weight=self.class_weights),
                 on_epoch=True, batch_size=len(y))
        self.val_f1.update(logits, y)
        self.val_acc.update(logits, y)

    def on_validation_epoch_end(self):
        self.log("val/macro_f1", self.val_f1.compute())
        self.log("val/accuracy", self.val_acc.compute())
        self.val_f1.reset()
        self.val_acc.reset()

    def on_test_epoch_start(self):
        self.test_rows, self.test_scores = [], []

    def test_step(self, batch, batch_idx):
        rows, x, y = batch
        logits = self(x)
        self.test_f1.update(logits, y)
        self.test_acc.update(logits, y)
        self.test_f1_per_class.update(logits, y)
        self.test_rows.append(rows.cpu())
        self.test_scores.append(logits.softmax(dim=1).cpu())

    def on_test_epoch_end(self):
        self.log("test/macro_f1", self.test_f1.compute())
        self.log("test/accuracy", self.test_acc.compute())
        for name, value in zip(self.class_names, self.test_f1_per_class.compute()):
            self.log(f"test/f1/{name}", value)
        for metric in (self.test_f1, self.test_acc, self.test_f1_per_class):
            metric.reset()

    def configure_optimizers(self):
        return self.optimizer_factory(self.head.parameters())
