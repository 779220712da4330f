"""A single-head LightningModule: cross-entropy, scored by macro F1 with torchmetrics. Fine-tuning
builds on it; head training on cached embeddings uses the grid (`heads.grid`)."""

from __future__ import annotations

from typing import Callable, Sequence

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MultilabelExactMatch,
    MultilabelF1Score,
)

from xferlab.heads.scores import THRESHOLD  # multilabel decision threshold


class HeadClassifier(L.LightningModule):
    """Trains an injected head module. Logs `train/loss`, `val/macro_f1`, `val/accuracy` and, on
    test, `test/macro_f1`, `test/accuracy` and `test/f1/<class>`; keeps the test scores for the
    predictions file.

    Single-label: softmax cross-entropy, accuracy = fraction correct. Multilabel (targets are
    multi-hot): per-class sigmoid with binary cross-entropy, a class is predicted when its score
    exceeds 0.5, macro F1 averages the per-class F1 over all classes, accuracy = exact-set match.
    """

    def __init__(
        self,
        head: nn.Module,
        class_names: Sequence[str],
        optimizer: Callable[..., torch.optim.Optimizer],
        class_weights: torch.Tensor | None = None,
        multilabel: bool = False,
    ):
        super().__init__()
        self.head = head
        self.class_names = list(class_names)
        self.optimizer_factory = optimizer
        self.multilabel = multilabel
        k = len(self.class_names)
        self.register_buffer("class_weights", class_weights if class_weights is not None else torch.ones(k))
        if multilabel:
            f1 = lambda average: MultilabelF1Score(k, threshold=THRESHOLD, average=average)  # noqa: E731
            acc = lambda: MultilabelExactMatch(k, threshold=THRESHOLD)  # noqa: E731
        else:
            f1 = lambda average: MulticlassF1Score(k, average=average)  # noqa: E731
            acc = lambda: MulticlassAccuracy(k, average="micro")  # noqa: E731
        self.val_f1, self.val_acc = f1("macro"), acc()
        self.test_f1, self.test_acc = f1("macro"), acc()
        self.test_f1_per_class = f1("none")
        self.test_rows: list[torch.Tensor] = []
        self.test_scores: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.multilabel:
            return nn.functional.binary_cross_entropy_with_logits(logits, y.float(), pos_weight=self.class_weights)
        return nn.functional.cross_entropy(logits, y, weight=self.class_weights)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.sigmoid() if self.multilabel else logits.softmax(dim=1)

    def training_step(self, batch, batch_idx):
        _, x, y = batch
        loss = self.loss(self(x), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def validation_step(self, batch, batch_idx):
        _, x, y = batch
        logits = self(x)
        self.log("val/loss", self.loss(logits, y), on_epoch=True, batch_size=len(y))
        scores = self.scores(logits)
        self.val_f1.update(scores, y)
        self.val_acc.update(scores, y)

    def on_validation_epoch_end(self):
        self.log("val/macro_f1", self.val_f1.compute())
        self.log("val/accuracy", self.val_acc.compute())
        self.val_f1.reset()
        self.val_acc.reset()

    def on_test_epoch_start(self):
        self.test_rows, self.test_scores = [], []

    def test_step(self, batch, batch_idx):
        rows, x, y = batch
        scores = self.scores(self(x))
        self.test_f1.update(scores, y)
        self.test_acc.update(scores, y)
        self.test_f1_per_class.update(scores, y)
        self.test_rows.append(rows.cpu())
        self.test_scores.append(scores.cpu())

    def on_test_epoch_end(self):
        self.log("test/macro_f1", self.test_f1.compute())
        self.log("test/accuracy", self.test_acc.compute())
        for name, value in zip(self.class_names, self.test_f1_per_class.compute()):
            self.log(f"test/f1/{name}", value)
        for metric in (self.test_f1, self.test_acc, self.test_f1_per_class):
            metric.reset()

    def configure_optimizers(self):
        return self.optimizer_factory(self.head.parameters())
