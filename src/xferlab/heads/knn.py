"""k-nearest-neighbour evaluation on frozen embeddings: L2-normalised, cosine similarity; the
neighbours are found once (up to the largest k) and every k is read from them. A query's class is
the majority vote of its k neighbours, ties broken by the summed similarity."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def neighbours(bank: np.ndarray, queries: np.ndarray, k: int, batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Indices and cosine similarities of the `k` most similar bank rows for every query."""
    b = F.normalize(torch.from_numpy(np.asarray(bank, dtype=np.float32)), dim=1)
    k = min(k, len(b))
    idx, sims = [], []
    for start in range(0, len(queries), batch):
        q = F.normalize(torch.from_numpy(np.asarray(queries[start : start + batch], dtype=np.float32)), dim=1)
        s, i = (q @ b.T).topk(k, dim=1)
        idx.append(i.numpy())
        sims.append(s.numpy())
    return np.concatenate(idx), np.concatenate(sims)


def vote(idx: np.ndarray, sims: np.ndarray, bank_labels: np.ndarray, k: int, num_classes: int) -> np.ndarray:
    """Vote shares `(N, K)` of the first `k` neighbours (plus a tie-breaking similarity term)."""
    labels = bank_labels[idx[:, :k]]
    counts = np.zeros((len(idx), num_classes))
    np.add.at(counts, (np.arange(len(idx))[:, None], labels), 1.0 + 1e-6 * sims[:, :k])
    return counts / counts.sum(axis=1, keepdims=True)


def knn_scores(bank: np.ndarray, bank_labels: np.ndarray, queries: np.ndarray, ks: Sequence[int],
               num_classes: int) -> dict[int, np.ndarray]:
    idx, sims = neighbours(bank, queries, max(ks))
    return {int(k): vote(idx, sims, bank_labels, int(k), num_classes) for k in ks}
