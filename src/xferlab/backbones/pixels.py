"""`backbone=pixels`: the no-learning baseline. Raw (preprocessed) pixels average-pooled to
`grid x grid` per input channel and flattened; no weights, no pooling strategy."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from xferlab.backbones.registry import Backbone


class PixelFeatures(nn.Module):
    def __init__(self, in_chans: int, grid: int):
        super().__init__()
        if grid < 1:
            raise ValueError(f"backbone.grid={grid}: choose a positive number of cells per side (e.g. 16)")
        self.grid = int(grid)
        self.num_features = in_chans * self.grid * self.grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, self.grid).flatten(1)


class PixelBackbone(Backbone):
    def __init__(self, name: str, in_channels: Sequence[str], grid: int, preprocess: dict[str, Any]):
        model = PixelFeatures(len(in_channels), int(grid))
        super().__init__(model, name=name, arch="pixels", in_channels=in_channels, features="pixels",
                         preprocess=preprocess, model_kwargs={"grid": int(grid)}, weights_source="none (raw pixels)")

    @property
    def embed_dim(self) -> int:
        return int(self.model.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
