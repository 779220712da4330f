"""Training a head grid on frozen embeddings: the `linear` and `mlp` heads (`GridHead`), and what
the head benchmark times (`train_head`).

`head.grid.lr` and `head.grid.weight_decay` (a value or a list each) span the grid: one head per
(lr, weight decay) pair, in that order (lr-major), each with its own initialisation drawn, one
after the other, from the run seed. All heads are trained together by one Lightning Trainer;
the head best on validation macro F1 (over heads and epochs) is tested once.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig

from xferlab.backbones.weights import state_dict_sha256
from xferlab.data.splits import TRAIN, VAL
from xferlab.heads.base import EMBEDDINGS, HeadData, HeadResult, check_class_weights, class_weights
from xferlab.heads.datamodule import EmbeddingDataModule
from xferlab.heads.grid import GridHeadClassifier, Setting
from xferlab.heads.modules import HeadGrid
from xferlab.metrics import DEFAULT_AVERAGE_OVER
from xferlab.runtime.checkpointing import StallPoint


def grid_settings(grid: Any) -> list[Setting]:
    """`{lr: [a, b], weight_decay: [c]}` -> `[(a, c), (b, c)]`; a single value is a list of one."""
    def values(key: str) -> list[float]:
        value = grid.get(key) if grid is not None else None
        if value is None:
            raise ValueError(f"head.grid.{key} is missing: give a value or a list, e.g. head.grid.{key}=[0.01,0.1]")
        items = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
        if not items or any(not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 for v in items):
            raise ValueError(f"head.grid.{key}={value!r}: give non-negative numbers")
        if len(set(items)) != len(items):
            raise ValueError(f"head.grid.{key}={value!r} lists a value twice")
        return [float(v) for v in items]

    return [(lr, wd) for lr in values("lr") for wd in values("weight_decay")]


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `n` for the block (None: left as they are)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_head(head_cfg: DictConfig, embeddings: np.ndarray, labels: np.ndarray, split: np.ndarray,
               class_names: list[str], *, multilabel: bool, seed: int, make_trainer: Callable[..., L.Trainer],
               logger: Any = False, root_dir: Path | None = None,
               average_over: str = DEFAULT_AVERAGE_OVER) -> HeadResult:
    """Build the grid of `head_cfg.module` heads, fit its input normalisation on the training
    rows, train it with early stopping on validation macro F1 (averaged over the classes
    `average_over` names, as on test), and test the best head once; on `head_cfg.threads` CPU
    threads (null: torch's setting)."""
    with torch_threads(head_cfg.get("threads")):
        return _train_head(head_cfg, embeddings, labels, split, class_names, multilabel=multilabel, seed=seed,
                           make_trainer=make_trainer, logger=logger, root_dir=root_dir, average_over=average_over)


def _train_head(head_cfg: DictConfig, embeddings: np.ndarray, labels: np.ndarray, split: np.ndarray,
                class_names: list[str], *, multilabel: bool, seed: int, make_trainer: Callable[..., L.Trainer],
                logger: Any, root_dir: Path | None, average_over: str) -> HeadResult:
    started = time.perf_counter()
    settings = grid_settings(head_cfg.get("grid"))
    L.seed_everything(int(seed), workers=True, verbose=False)
    data = EmbeddingDataModule(embeddings, labels, split, batch_size=head_cfg.batch_size, seed=seed)
    in_dim, num_classes = data.embeddings.shape[1], len(class_names)
    make_head = instantiate(head_cfg.module, _partial_=True)
    grid = HeadGrid([make_head(in_dim=in_dim, num_classes=num_classes) for _ in settings])
    if hasattr(grid.norm, "fit"):
        grid.norm.fit(data.train_features())
    data.transform_features(grid.normalise)  # once, not per batch and head
    initial = [{k: v.clone() for k, v in member.state_dict().items()} for member in grid.members]
    weights = class_weights(labels[split == TRAIN], num_classes, head_cfg.class_weights)
    model = GridHeadClassifier(grid, settings, class_names, instantiate(head_cfg.optimizer), weights,
                               multilabel=multilabel, patience=int(head_cfg.patience), average_over=average_over)
    trainer = make_trainer(max_epochs=int(head_cfg.max_epochs), logger=logger,
                           enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                           num_sanity_val_steps=0, log_every_n_steps=1, callbacks=[StallPoint("head", str(root_dir))],
                           default_root_dir=None if root_dir is None else str(root_dir))
    trainer.fit(model, datamodule=data)
    fit_seconds = time.perf_counter() - started
    trainer.test(model, datamodule=data, verbose=False)
    head = model.best_head
    val_rows, val_x, _ = data.part(VAL)
    with torch.no_grad():
        val_scores = model.scores(model.best_member.eval()(val_x)).numpy()
    info = {
        "fit_seconds": fit_seconds,
        "head_seconds": time.perf_counter() - started,
        "epochs": int(trainer.current_epoch),
        "head_sha256_before": state_dict_sha256(grid.head(model.best.member, initial[model.best.member])),
        "head_sha256_after": state_dict_sha256(head),
    }
    return HeadResult(rows=torch.cat(model.test_rows).numpy(), scores=torch.cat(model.test_scores).numpy(),
                      selection=model.selection(), info=info, module=head, val_rows=val_rows.numpy(),
                      val_scores=val_scores)


class GridHead:
    """`head=linear` / `head=mlp`: a grid of `module` heads, one per (lr, weight decay) of `grid`,
    trained in one pass on the cached embeddings (see `train_head` and `heads.grid`)."""

    inputs = EMBEDDINGS

    def __init__(self, name: str, module: Any, optimizer: Any, grid: Any, class_weights: str = "none",
                 batch_size: int = 1024, max_epochs: int = 100, patience: int = 5, threads: int | None = 1):
        self.name = name
        self.config = DictConfig({"module": module, "optimizer": optimizer, "grid": grid,
                                  "class_weights": check_class_weights(class_weights), "batch_size": batch_size,
                                  "max_epochs": max_epochs, "patience": patience, "threads": threads})
        grid_settings(grid)  # a bad grid fails before any work

    def check(self, *, multilabel: bool, multi_view: bool) -> None:
        """Every label rule and channel strategy works with a grid."""

    def fit(self, data: HeadData) -> HeadResult:
        return train_head(self.config, data.features, data.labels, data.split, data.classes,
                          multilabel=data.multilabel, seed=data.seed, make_trainer=data.make_trainer,
                          logger=data.loggers, root_dir=data.run_dir, average_over=data.average_over)
