"""Head modules: embeddings `(B, D)` -> logits `(B, K)`.

Each head standardises its input with the training split's mean and std, held as buffers so the
checkpoint carries them.
"""

from __future__ import annotations

import torch
from torch import nn


class FeatureNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, features: torch.Tensor) -> None:
        self.mean.copy_(features.mean(dim=0))
        self.std.copy_(features.std(dim=0).clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class LinearHead(nn.Module):
    def __init__(self, in_dim: int, num_classes: int, standardize: bool = True):
        super().__init__()
        self.norm = FeatureNorm(in_dim) if standardize else nn.Identity()
        self.fc = nn.Linear(in_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x))


class MLPHead(nn.Module):
    def __init__(self, in_dim: int, num_classes: int, hidden_dim: int = 256, dropout: float = 0.1,
                 standardize: bool = True):
        super().__init__()
        self.norm = FeatureNorm(in_dim) if standardize else nn.Identity()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x))
