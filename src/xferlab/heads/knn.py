"""`head=knn`: k-nearest-neighbour evaluation on frozen embeddings: L2-normalised, cosine
similarity; the neighbours are found once (up to the largest k) and every k is read from them. A
query's class is the majority vote of its k neighbours, ties broken by the summed similarity."""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from xferlab import metrics
from xferlab.data.splits import TEST, TRAIN, VAL
from xferlab.heads.base import EMBEDDINGS, HeadData, HeadResult


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


class KNNHead:
    """Every k of `ks` scored on validation and on test from one neighbour search over the training
    rows; the k best on validation macro F1 (ties: the smaller k) gives the test scores. The
    per-k scores are kept as `knn/k=<k>/<split>/<metric>` (the report draws macro F1 against k).
    No training and no seed."""

    inputs = EMBEDDINGS

    def __init__(self, name: str, ks: Sequence[int] = (1, 5, 10, 20, 50)):
        self.name = name
        self.ks = [int(k) for k in ks]
        if not self.ks or any(k < 1 for k in self.ks) or len(set(self.ks)) != len(self.ks):
            raise ValueError(f"head.ks={list(ks)}: give distinct positive neighbour counts, e.g. [1,5,10]")

    def check(self, *, multilabel: bool, multi_view: bool) -> None:
        if multilabel:
            raise ValueError("head=knn votes for one class per sample; this dataset's label rule is multilabel "
                             "(use dataset.labels.rule=single_grade3, or head=linear)")

    def fit(self, data: HeadData) -> HeadResult:
        started = time.perf_counter()
        train, val, test = (np.nonzero(data.split == code)[0] for code in (TRAIN, VAL, TEST))
        k_classes, x, y = len(data.classes), data.features, data.labels
        parts = {"val": (val, knn_scores(x[train], y[train], x[val], self.ks, k_classes)),
                 "test": (test, knn_scores(x[train], y[train], x[test], self.ks, k_classes))}
        selection: dict = {}
        for k in self.ks:
            for part, (rows, scores) in parts.items():
                scored = metrics.score(y[rows], scores[k], classes=data.classes, multilabel=False,
                                       average_over=data.average_over, prefix=f"knn/k={k}/{part}/")
                selection.update({name: v for name, v in scored.items() if name.count("/") == 3})
        best = max(self.ks, key=lambda k: (selection[f"knn/k={k}/val/macro_f1"], -k))
        selection.update({"knn_k": best, "val/macro_f1": selection[f"knn/k={best}/val/macro_f1"]})
        return HeadResult(rows=test, scores=parts["test"][1][best], selection=selection,
                          info={"fit_seconds": time.perf_counter() - started})
