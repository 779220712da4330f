"""Cached embeddings as train/val/test dataloaders, held in memory."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from xferlab.data.splits import TEST, TRAIN, VAL


class EmbeddingDataModule(L.LightningDataModule):
    """Rows of each split as `(row index, embedding, label)`; the training order is drawn from
    `seed`, so the seed fixes the data order. Labels are class indices `(N,)` or, for multilabel
    data, multi-hot rows `(N, K)`."""

    def __init__(self, embeddings: np.ndarray, labels: np.ndarray, split: np.ndarray,
                 batch_size: int = 256, seed: int = 0):
        super().__init__()
        self.embeddings = torch.from_numpy(np.array(embeddings, dtype=np.float32))
        self.labels = torch.from_numpy(np.array(labels, dtype=np.int64))  # multi-hot rows stay 2-D
        self.split = np.asarray(split)
        self.batch_size = int(batch_size)
        self.seed = int(seed)

    def rows(self, which: int) -> torch.Tensor:
        return torch.from_numpy(np.nonzero(self.split == which)[0])

    def dataset(self, which: int) -> TensorDataset:
        rows = self.rows(which)
        if len(rows) == 0:
            name = {TRAIN: "train", VAL: "val", TEST: "test"}[which]
            raise ValueError(f"the {name} split is empty; the dataset is too small for the split fractions")
        return TensorDataset(rows, self.embeddings[rows], self.labels[rows])

    def train_features(self) -> torch.Tensor:
        return self.embeddings[self.rows(TRAIN)]

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.dataset(TRAIN), batch_size=self.batch_size, shuffle=True, generator=generator)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset(VAL), batch_size=self.batch_size * 4)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset(TEST), batch_size=self.batch_size * 4)
