"""Cached embeddings (or preprocessed images) as train/val/test batches, held in memory."""

from __future__ import annotations

from typing import Callable, Iterator

import lightning as L
import numpy as np
import torch

from xferlab.data.splits import TEST, TRAIN, VAL

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class TensorBatches:
    """`(rows, x, y)` batches sliced from in-memory tensors: no per-sample collate. With a
    `generator`, every pass (epoch) draws a fresh permutation from it, so the generator's seed
    fixes the order of all epochs; without one, the rows come in order."""

    def __init__(self, rows: torch.Tensor, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                 generator: torch.Generator | None = None):
        self.rows, self.x, self.y = rows, x, y
        self.batch_size, self.generator = int(batch_size), generator

    def __len__(self) -> int:
        return (len(self.rows) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[Batch]:
        if self.generator is None:
            for start in range(0, len(self.rows), self.batch_size):
                stop = start + self.batch_size
                yield self.rows[start:stop], self.x[start:stop], self.y[start:stop]
            return
        order = torch.randperm(len(self.rows), generator=self.generator)
        for start in range(0, len(self.rows), self.batch_size):
            take = order[start : start + self.batch_size]  # gathered per batch: images stay one copy
            yield self.rows[take], self.x[take], self.y[take]


class EmbeddingDataModule(L.LightningDataModule):
    """Rows of each split as `(row index, embedding, label)` batches; the training order is drawn
    from `seed`, so the seed fixes the data order. Labels are class indices `(N,)` or, for
    multilabel data, multi-hot rows `(N, K)`. Validation and test come in batches of
    `eval_batch_size` (default: 4 x `batch_size`)."""

    def __init__(self, embeddings: np.ndarray | torch.Tensor, labels: np.ndarray, split: np.ndarray,
                 batch_size: int = 256, seed: int = 0, eval_batch_size: int | None = None):
        super().__init__()
        self.embeddings = torch.from_numpy(np.array(embeddings, dtype=np.float32))
        labels = np.asarray(labels)  # class indices, or multilabel rows (multi-hot or grade weights) as floats
        self.labels = torch.from_numpy(np.array(labels, dtype=np.float32 if labels.ndim == 2 else np.int64))
        self.split = np.asarray(split)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or 4 * self.batch_size)
        self.seed = int(seed)
        self._parts: dict[int, Batch] = {}

    def rows(self, which: int) -> torch.Tensor:
        return torch.from_numpy(np.nonzero(self.split == which)[0])

    def part(self, which: int) -> Batch:
        """`(rows, x, y)` of one split, gathered once."""
        if which not in self._parts:
            rows = self.rows(which)
            if len(rows) == 0:
                name = {TRAIN: "train", VAL: "val", TEST: "test"}[which]
                raise ValueError(f"the {name} split is empty; the dataset is too small for the split fractions")
            self._parts[which] = (rows, self.embeddings[rows], self.labels[rows])
        return self._parts[which]

    def train_features(self) -> torch.Tensor:
        return self.part(TRAIN)[1]

    def transform_features(self, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Apply a fixed transform (a fitted input normalisation) once to the rows of every split;
        the batches carry the transformed features from then on."""
        for which in (TRAIN, VAL, TEST):
            rows, x, y = self.part(which)
            self._parts[which] = (rows, transform(x), y)

    def train_dataloader(self) -> TensorBatches:
        return TensorBatches(*self.part(TRAIN), self.batch_size, torch.Generator().manual_seed(self.seed))

    def val_dataloader(self) -> TensorBatches:
        return TensorBatches(*self.part(VAL), self.eval_batch_size)

    def test_dataloader(self) -> TensorBatches:
        return TensorBatches(*self.part(TEST), self.eval_batch_size)
