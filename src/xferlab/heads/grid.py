"""The head-grid LightningModule (dinov2-eval style): one head per (learning rate, weight decay)
setting, all trained in one pass over the embeddings with summed losses; each epoch every head
is scored on validation; the best (head, epoch) on validation is kept in memory and is the only
one that sees the test split, once.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Sequence

import lightning as L
import torch
from torch import nn

from xferlab import metrics
from xferlab.heads.modules import HeadGrid
from xferlab.metrics import DEFAULT_AVERAGE_OVER, GridCounts, check_average_over

Setting = tuple[float, float]  # (learning rate, weight decay)


def setting_name(setting: Setting) -> str:
    lr, wd = setting
    return f"lr={lr:g},wd={wd:g}"


@dataclass
class Best:
    member: int
    epoch: int
    macro_f1: float
    state: dict[str, torch.Tensor]


class GridHeadClassifier(L.LightningModule):
    """Trains `grid.members[g]` with learning rate and weight decay `settings[g]` (one optimizer,
    one parameter group per head; the loss is the sum of the heads' losses, so no head's gradient
    depends on another head).

    Batches carry features already normalised by `grid.norm` (see `HeadGrid`).

    Writes per epoch `train/loss` (mean over heads), `val/macro_f1` and `val/accuracy` (of the
    head best on validation in that epoch) and `grid/<setting>/val/macro_f1` to the loggers.
    The best (head, epoch) is the first to reach the highest validation macro F1 (ties: earlier
    epoch, then earlier setting); its parameters are kept in memory, no checkpoint file. Training
    stops once no head has beaten it for `patience` epochs (or at the Trainer's `max_epochs`).
    After fitting, `best_member` holds the chosen parameters and `best_head` is that head as a
    standalone module of raw embeddings (with the grid's input normalisation). `test` scores the
    chosen head alone and keeps its scores (`test_rows`, `test_scores`; `test_metrics` has every
    metric of `xferlab.metrics` on them, for inspection: the job computes and logs its own).

    Single-label: softmax cross-entropy. Multilabel (multi-hot targets): per-class sigmoid with
    binary cross-entropy (`class_weights` as `pos_weight`), threshold 0.5. Macro F1 (validation
    and test) averages over the classes `average_over` names (see `xferlab.metrics`).
    """

    def __init__(
        self,
        grid: HeadGrid,
        settings: Sequence[Setting],
        class_names: Sequence[str],
        optimizer: Callable[..., torch.optim.Optimizer],
        class_weights: torch.Tensor | None = None,
        multilabel: bool = False,
        patience: int = 10,
        average_over: str = DEFAULT_AVERAGE_OVER,
    ):
        super().__init__()
        self.average_over = check_average_over(average_over)
        if len(settings) != len(grid):
            raise ValueError(f"{len(settings)} settings for a grid of {len(grid)} heads")
        self.grid = grid
        self.settings = [(float(lr), float(wd)) for lr, wd in settings]
        self.names = [setting_name(s) for s in self.settings]
        self.class_names = list(class_names)
        self.optimizer_factory = optimizer
        self.multilabel = multilabel
        self.patience = int(patience)
        self.register_buffer("class_weights", class_weights if class_weights is not None else torch.ones(len(class_names)))
        self.member_best = [float("-inf")] * len(grid)
        self.member_best_epoch = [-1] * len(grid)
        self.best: Best | None = None
        self.best_member: nn.Module | None = None
        self.best_head: nn.Module | None = None
        self.test_runs = 0
        self.test_metrics: dict[str, float] = {}
        self.test_rows: list[torch.Tensor] = []
        self.test_scores: list[torch.Tensor] = []

    # -- losses and scores -------------------------------------------------------------------
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised features `(B, D)` -> logits of every head `(G, B, K)`."""
        return self.grid(z)

    def losses(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each head's mean loss over the batch `(G,)`."""
        g, b, k = logits.shape
        if self.multilabel:
            per = nn.functional.binary_cross_entropy_with_logits(
                logits, y.float().expand(g, b, k), pos_weight=self.class_weights, reduction="none")
            return per.mean(dim=(1, 2))
        # sample-major rows (a linear grid's logits are stored that way, so this is no copy)
        rows = logits.transpose(0, 1).reshape(b * g, k)
        per = nn.functional.cross_entropy(rows, y[:, None].expand(b, g).reshape(-1), weight=self.class_weights,
                                          reduction="none").view(b, g)
        return per.sum(dim=0) / self.class_weights[y].sum()

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.sigmoid() if self.multilabel else logits.softmax(dim=-1)

    # -- training ----------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self._loss_sum, self._loss_batches = torch.zeros((), device=self.device), 0

    def training_step(self, batch, batch_idx):
        _, x, y = batch
        losses = self.losses(self(x), y)
        self._loss_sum = self._loss_sum + losses.detach().mean()
        self._loss_batches += 1
        return losses.sum()

    def configure_optimizers(self):
        groups = [{"params": list(member.parameters()), "lr": lr, "weight_decay": wd}
                  for member, (lr, wd) in zip(self.grid.members, self.settings)]
        return self.optimizer_factory(groups)

    # -- validation: every head, vectorised ---------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val = GridCounts(len(self.grid), len(self.class_names), self.multilabel, device=self.device,
                               average_over=self.average_over)

    def validation_step(self, batch, batch_idx):
        _, x, y = batch
        self._val.update(self.scores(self(x)), y)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        counts = self._val.counts()
        f1, accuracy = torch.from_numpy(metrics.macro_f1(counts)), torch.from_numpy(metrics.accuracy(counts))
        epoch = int(self.current_epoch)
        for g, value in enumerate(f1.tolist()):
            if value > self.member_best[g]:
                self.member_best[g], self.member_best_epoch[g] = value, epoch
        g = int(f1.argmax())  # the first head with the highest score
        if self.best is None or f1[g].item() > self.best.macro_f1:
            state = {k: v.detach().clone() for k, v in self.grid.members[g].state_dict().items()}
            self.best = Best(member=g, epoch=epoch, macro_f1=f1[g].item(), state=state)
        elif epoch - self.best.epoch >= self.patience:
            self.trainer.should_stop = True  # no head has beaten the best for `patience` epochs
        self._epoch_metrics = {"val/macro_f1": f1[g].item(), "val/accuracy": accuracy[g].item(),
                               **{f"grid/{name}/val/macro_f1": v for name, v in zip(self.names, f1.tolist())}}

    def on_train_epoch_end(self) -> None:
        row = dict(getattr(self, "_epoch_metrics", {}))
        if self._loss_batches:
            row["train/loss"] = (self._loss_sum / self._loss_batches).item()
        self.write_metrics({"epoch": int(self.current_epoch), **row})
        self._epoch_metrics = {}

    def write_metrics(self, metrics: dict[str, float]) -> None:
        """Straight to the loggers, one row per call. (`self.log` costs milliseconds per key on a
        CPU, as much as an epoch of a linear grid, and nothing here needs its reductions.)"""
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.global_step)

    def on_fit_end(self) -> None:
        if self.best is None:
            raise RuntimeError("the head grid was never validated (max_epochs=0?): no head to test")
        self.best_member = copy.deepcopy(self.grid.members[self.best.member])
        self.best_member.load_state_dict(self.best.state)
        self.best_head = self.grid.head(self.best.member, self.best.state)

    # -- test: the best head only ------------------------------------------------------------
    def on_test_epoch_start(self) -> None:
        if self.best_member is None:
            raise RuntimeError("fit the head grid before testing: the best head is chosen on validation")
        self.test_runs += 1
        self.best_member.to(self.device).eval()
        self.test_rows, self.test_scores, self._test_labels = [], [], []

    def test_step(self, batch, batch_idx):
        rows, x, y = batch
        scores = self.scores(self.best_member(x))
        self.test_rows.append(rows.cpu())
        self.test_scores.append(scores.cpu())
        self._test_labels.append(y.cpu())

    def on_test_epoch_end(self) -> None:
        self.test_metrics = metrics.score(torch.cat(self._test_labels).numpy(), torch.cat(self.test_scores).numpy(),
                                          classes=self.class_names, multilabel=self.multilabel,
                                          average_over=self.average_over)

    # -- what metrics.json records about the grid ---------------------------------------------
    def selection(self) -> dict[str, float | int]:
        """The winning setting, its epoch (0-based) and validation macro F1, and every head's
        best validation macro F1."""
        if self.best is None:
            raise RuntimeError("the head grid has not been fitted")
        lr, wd = self.settings[self.best.member]
        return {
            "val/macro_f1": self.best.macro_f1,
            "head/lr": lr,
            "head/weight_decay": wd,
            "head/best_epoch": self.best.epoch,
            "head/grid_size": len(self.settings),
            **{f"grid/{name}/val/macro_f1": value for name, value in zip(self.names, self.member_best)},
        }
