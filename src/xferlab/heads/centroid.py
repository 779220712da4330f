"""`head=centroid`: nearest class mean, a baseline that trains nothing. The embeddings are
whitened with training-split statistics (as the grid heads' input) and L2-normalised; each class's
centroid is the normalised mean of its training rows, and a sample scores each class by cosine
similarity to its centroid (softmax over `temperature`-scaled similarities, so the scores are
probabilities and the class with the highest similarity is predicted)."""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xferlab import metrics
from xferlab.data.splits import TEST, TRAIN, VAL
from xferlab.heads.base import EMBEDDINGS, HeadData, HeadResult
from xferlab.heads.modules import make_norm


class CentroidClassifier(nn.Module):
    """Embeddings `(B, D)` -> class logits `(B, K)`: cosine similarity of the normalised input to
    each class centroid, divided by the temperature."""

    def __init__(self, in_dim: int, num_classes: int, norm: str = "whiten", shrinkage: float = 0.1,
                 temperature: float = 0.05):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"head.temperature={temperature}: choose a value > 0 (e.g. 0.05)")
        self.norm = make_norm(norm, in_dim, shrinkage)
        self.temperature = float(temperature)
        self.register_buffer("centroids", torch.zeros(num_classes, in_dim))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.norm(x), dim=1)

    @torch.no_grad()
    def fit(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        """Input normalisation and centroids from the training rows; a class with no training row
        keeps a zero centroid (similarity 0 to everything)."""
        if hasattr(self.norm, "fit"):
            self.norm.fit(x)
        z = self.embed(x)
        sums = torch.zeros_like(self.centroids).index_add_(0, labels, z)
        self.centroids.copy_(F.normalize(sums, dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x) @ self.centroids.T / self.temperature


class CentroidHead:
    """The `CentroidClassifier` fitted on the training rows; nothing is chosen on validation (its
    macro F1 is recorded as `val/macro_f1`)."""

    inputs = EMBEDDINGS

    def __init__(self, name: str, norm: str = "whiten", shrinkage: float = 0.1, temperature: float = 0.05):
        self.name = name
        self.norm, self.shrinkage, self.temperature = norm, float(shrinkage), float(temperature)
        CentroidClassifier(1, 1, norm, shrinkage, temperature)  # bad settings fail before any work

    def check(self, *, multilabel: bool, multi_view: bool) -> None:
        if multilabel:
            raise ValueError("head=centroid assigns one class per sample; this dataset's label rule is multilabel "
                             "(use dataset.labels.rule=single_grade3, or head=linear)")

    def fit(self, data: HeadData) -> HeadResult:
        started = time.perf_counter()
        x = torch.as_tensor(np.array(data.features, dtype=np.float32))  # a copy: cached embeddings are read-only
        y = torch.as_tensor(np.array(data.labels, dtype=np.int64))
        train, val, test = (torch.from_numpy(np.nonzero(data.split == code)[0]) for code in (TRAIN, VAL, TEST))
        model = CentroidClassifier(x.shape[1], len(data.classes), self.norm, self.shrinkage, self.temperature)
        model.fit(x[train], y[train])
        with torch.no_grad():
            val_scores = model(x[val]).softmax(dim=1).numpy()
            test_scores = model(x[test]).softmax(dim=1).numpy()
        val_metrics = metrics.score(y[val].numpy(), val_scores, classes=data.classes, multilabel=False,
                                    average_over=data.average_over, prefix="val/")
        return HeadResult(rows=test.numpy(), scores=test_scores, selection={"val/macro_f1": val_metrics["val/macro_f1"]},
                          info={"fit_seconds": time.perf_counter() - started}, module=model)
