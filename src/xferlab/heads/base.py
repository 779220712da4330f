"""The one protocol every head answers, and what passes between a head and the job.

A head is a `_target_` in `conf/head/` (built with `_recursive_: false`, so it receives its own
sub-configs). It says which inputs it trains on (`inputs`: cached `embeddings`, or preprocessed
`images` for heads that train the backbone too), refuses configurations it cannot handle in
`check` (called before any store is built or image read), and `fit` trains on the training
rows, chooses on the validation rows and returns class scores for the test rows. The job turns
those scores into every number (`xferlab.metrics`) and writes them, the same way for all heads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol

import lightning as L
import numpy as np
import torch

EMBEDDINGS, IMAGES = "embeddings", "images"


@dataclass
class HeadData:
    """What a head trains on. `features` are embeddings `(N, D)` or preprocessed images
    `(N, C, S, S)` (as the head's `inputs` asks); `labels` are class indices `(N,)` or multi-hot
    rows `(N, K)`; `split` marks train / val / test rows (`xferlab.data.splits`)."""

    features: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    classes: list[str]
    multilabel: bool
    seed: int
    average_over: str
    make_trainer: Callable[..., L.Trainer]
    loggers: Any = False
    run_dir: Path | None = None
    backbone: torch.nn.Module | None = None  # for heads that train it (a copy; the job's stays frozen)


@dataclass
class HeadResult:
    """A fitted head's class scores `(n_test, K)` for the test rows `rows` (store indices), what it
    chose on validation (`selection`: at least `val/macro_f1`, plus `head/*`, `grid/*`, `knn/*`
    as the head has them; written to metrics.json), run facts (`info`: timings, digests; written to
    run_info.json), the fitted module, if there is one, and the chosen head's validation scores,
    if it has them."""

    rows: np.ndarray
    scores: np.ndarray
    selection: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    module: torch.nn.Module | None = None
    val_rows: np.ndarray | None = None  # the chosen head's validation scores, where it has them
    val_scores: np.ndarray | None = None  # (multilabel thresholds are tuned on them)


class Head(Protocol):
    name: str
    inputs: ClassVar[str]

    def check(self, *, multilabel: bool, multi_view: bool) -> None:
        """Raise ValueError (naming the key and the fix) for data this head cannot handle."""

    def fit(self, data: HeadData) -> HeadResult:
        """Train on the training rows, choose on validation, score the test rows once."""


def class_weights(labels: np.ndarray, num_classes: int, rule: str) -> torch.Tensor | None:
    """`balanced`: inverse class frequency on the training labels (single-label), or the ratio of
    negatives to positives per class (multilabel `pos_weight`); 0 for a class absent from training."""
    if check_class_weights(rule) == "none":
        return None
    if labels.ndim == 2:
        pos = labels.sum(axis=0).astype(np.float64)
        return torch.tensor(np.where(pos > 0, (len(labels) - pos) / np.maximum(pos, 1), 0.0), dtype=torch.float32)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def check_class_weights(rule: str) -> str:
    if rule not in ("none", "balanced"):
        raise ValueError(f"head.class_weights={rule!r}; choose 'none' or 'balanced'")
    return rule
