"""Training a head grid on frozen embeddings: what `run_job` does for `head=linear` / `head=mlp`,
and what the head benchmark times.

`head.grid.lr` and `head.grid.weight_decay` (a value or a list each) span the grid: one head per
(lr, weight decay) pair, in that order (lr-major), each with its own initialisation drawn, one
after the other, from the run seed. All heads are trained together by one Lightning Trainer;
the head best on validation macro F1 (over heads and epochs) is tested once.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig

from xferlab.backbones.weights import state_dict_sha256
from xferlab.runtime.checkpointing import StallPoint
from xferlab.data.splits import TRAIN
from xferlab.heads.datamodule import EmbeddingDataModule
from xferlab.heads.grid import GridHeadClassifier, Setting
from xferlab.heads.modules import HeadGrid
from xferlab.heads.scores import DEFAULT_AVERAGE_OVER


@dataclass
class HeadFit:
    model: L.LightningModule
    head: torch.nn.Module  # the tested head: the best on validation, with its input normalisation
    metrics: dict[str, Any]  # test/*, val/macro_f1, head/*, grid/*
    rows: np.ndarray  # test rows (store indices) and their class scores, for the predictions file
    scores: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def class_weights(labels: np.ndarray, num_classes: int, rule: str) -> torch.Tensor | None:
    """`balanced`: inverse class frequency on the training labels (single-label), or the ratio of
    negatives to positives per class (multilabel `pos_weight`); 0 for a class absent from training."""
    if rule == "none":
        return None
    if rule != "balanced":
        raise ValueError(f"head.class_weights={rule!r}; choose 'none' or 'balanced'")
    if labels.ndim == 2:
        pos = labels.sum(axis=0).astype(np.float64)
        return torch.tensor(np.where(pos > 0, (len(labels) - pos) / np.maximum(pos, 1), 0.0), dtype=torch.float32)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


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
               average_over: str = DEFAULT_AVERAGE_OVER) -> HeadFit:
    """Build the grid of `head_cfg.module` heads, fit its input normalisation on the training
    rows, train it with early stopping on validation macro F1 (averaged over the classes
    `average_over` names, as on test), and test the best head once; on `head_cfg.threads` CPU
    threads (null: torch's setting)."""
    with torch_threads(head_cfg.get("threads")):
        return _train_head(head_cfg, embeddings, labels, split, class_names, multilabel=multilabel, seed=seed,
                           make_trainer=make_trainer, logger=logger, root_dir=root_dir, average_over=average_over)


def _train_head(head_cfg: DictConfig, embeddings: np.ndarray, labels: np.ndarray, split: np.ndarray,
                class_names: list[str], *, multilabel: bool, seed: int, make_trainer: Callable[..., L.Trainer],
                logger: Any, root_dir: Path | None, average_over: str) -> HeadFit:
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
    metrics = {**model.test_metrics, **model.selection()}
    head = model.best_head
    info = {
        "fit_seconds": fit_seconds,
        "head_seconds": time.perf_counter() - started,
        "epochs": int(trainer.current_epoch),
        "head_sha256_before": state_dict_sha256(grid.head(model.best.member, initial[model.best.member])),
        "head_sha256_after": state_dict_sha256(head),
    }
    return HeadFit(model=model, head=head, metrics=metrics, rows=torch.cat(model.test_rows).numpy(),
                   scores=torch.cat(model.test_scores).numpy(), info=info)
