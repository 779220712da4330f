"""A single-head LightningModule: cross-entropy, chosen on validation macro F1 (`xferlab.metrics`,
as the grid is). Fine-tuning builds on it; head training on cached embeddings uses the grid
(`heads.grid`)."""

from __future__ import annotations

from typing import Callable, Sequence

import lightning as L
import torch
from torch import nn

from xferlab import metrics
from xferlab.metrics import DEFAULT_AVERAGE_OVER, GridCounts, check_average_over


class HeadClassifier(L.LightningModule):
    """Trains an injected head module. Logs `train/loss`, `val/loss`, `val/macro_f1` and
    `val/accuracy`; on test it keeps the rows and their scores (`test_rows`, `test_scores`), which
    the job scores with `xferlab.metrics`.

    Single-label: softmax cross-entropy, accuracy = fraction correct. Multilabel (targets are
    multi-hot): per-class sigmoid with binary cross-entropy, a class is predicted when its score
    exceeds 0.5, accuracy = exact-set match. Macro F1 averages the per-class F1 over the classes
    `average_over` names (`xferlab.metrics`).
    """

    def __init__(
        self,
        head: nn.Module,
        class_names: Sequence[str],
        optimizer: Callable[..., torch.optim.Optimizer],
        class_weights: torch.Tensor | None = None,
        multilabel: bool = False,
        average_over: str = DEFAULT_AVERAGE_OVER,
    ):
        super().__init__()
        self.average_over = check_average_over(average_over)
        self.head = head
        self.class_names = list(class_names)
        self.optimizer_factory = optimizer
        self.multilabel = multilabel
        k = len(self.class_names)
        self.register_buffer("class_weights", class_weights if class_weights is not None else torch.ones(k))
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

    def counts(self) -> GridCounts:
        return GridCounts(1, len(self.class_names), self.multilabel, device=self.device,
                          average_over=self.average_over)

    def on_validation_epoch_start(self):
        self._val = self.counts()

    def validation_step(self, batch, batch_idx):
        _, x, y = batch
        logits = self(x)
        self.log("val/loss", self.loss(logits, y), on_epoch=True, batch_size=len(y))
        self._val.update(self.scores(logits)[None], y)

    def on_validation_epoch_end(self):
        counts = self._val.counts()
        self.log("val/macro_f1", float(metrics.macro_f1(counts)[0]))
        self.log("val/accuracy", float(metrics.accuracy(counts)[0]))

    def on_test_epoch_start(self):
        self.test_rows, self.test_scores = [], []

    def test_step(self, batch, batch_idx):
        rows, x, _ = batch
        self.test_rows.append(rows.cpu())
        self.test_scores.append(self.scores(self(x)).cpu())

    def configure_optimizers(self):
        return self.optimizer_factory(self.head.parameters())
