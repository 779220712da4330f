"""Pretraining data: the images a DINO run may see, held in memory, as multi-crop views.

For a labelled store only the training split's images are used (no validation or test image is
ever seen in pretraining); for an unlabelled store, every image. Each sample's views come from a
generator seeded by (seed, epoch, index), so a run is reproducible whatever the loader order.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from xferlab.data.splits import TRAIN, VAL, grouped_split
from xferlab.data.store import ImageStore
from xferlab.ssl.augment import MultiCrop


def pretraining_rows(store: ImageStore, val: float, test: float, split_seed: int,
                     unlabelled: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Rows to pretrain on, and validation rows for the kNN monitor (empty for unlabelled stores).
    With `unlabelled`, a labelled store's unlabelled samples (targets outside the label rule, in no
    split of this store) are pretrained on too."""
    if store.labels.max(initial=-1) < 0:
        return np.arange(len(store)), np.array([], dtype=int)
    split = grouped_split(store.samples["target"].to_numpy(), store.labels, val=val, test=test, seed=split_seed)
    use = (split == TRAIN) | ((store.labels < 0) if unlabelled else False)
    return np.nonzero(use)[0], np.nonzero(split == VAL)[0]


def targets_seen(store: ImageStore, rows: np.ndarray) -> dict[str, list[str]]:
    """The targets (and ENSG ids, where the store has them) of `rows`: what pretraining saw,
    recorded in its checkpoint so that evaluation can refuse test targets it saw."""
    out = {"targets": sorted(set(store.samples["target"].to_numpy()[rows].astype(str).tolist()))}
    if "ensg_id" in store.samples.columns:
        out["ensg_ids"] = sorted(set(store.samples["ensg_id"].to_numpy()[rows].astype(str).tolist()))
    return out


def load_rows(store: ImageStore, rows: np.ndarray, block: int = 2048) -> np.ndarray:
    """Images of `rows` (sorted), read in contiguous blocks."""
    out = np.empty((len(rows), *store.images.shape[1:]), dtype=store.images.dtype)
    for start in range(0, len(rows), block):
        chunk = rows[start : start + block]
        data = store.read(int(chunk[0]), int(chunk[-1]) + 1)
        out[start : start + len(chunk)] = data[chunk - chunk[0]]
    return out


class MultiCropDataset(Dataset):
    def __init__(self, images: torch.Tensor, transform: MultiCrop, seed: int):
        self.images = images  # prepared by the backbone's Preprocessor (N, C, H, W)
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(hash((self.seed, self.epoch, int(index))) & 0x7FFFFFFF)
        return self.transform(self.images[index], g)


class EpochShuffle(Sampler[int]):
    """A fresh random order each epoch, drawn from (seed, epoch) alone. A DataLoader's own shuffle
    draws from a generator whose state is not saved in checkpoints, so a resumed run would see other
    orders than a run that never stopped; with this sampler it sees the same ones. Lightning calls
    `set_epoch` before every epoch."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = int(n), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        state = np.random.SeedSequence([self.seed, self.epoch, 0x5EED]).generate_state(1)[0]
        return iter(torch.randperm(self.n, generator=torch.Generator().manual_seed(int(state))).tolist())
