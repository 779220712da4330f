"""How a ViT's tokens become one embedding (`backbone.features`). A pooling is a function of
(timm ViT, images) -> embeddings and a width: the embedding has `width x model.num_features` dims.

- `cls`: the class token after the final norm.
- `cls_avg`: the class token, then the mean of the patch tokens (register tokens and other prefix
  tokens left out), concatenated.
- `last4`: the class tokens of the last four blocks, each after the final norm, concatenated
  (DINO's linear-evaluation features).

All three work on timm's `VisionTransformer` (DINO, DINOv2 with or without registers) and `Eva`
(DINOv3: RoPE, registers); register tokens count among `num_prefix_tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class Pooling:
    name: str
    width: int
    fn: Callable[[nn.Module, torch.Tensor], torch.Tensor]


POOLINGS: dict[str, Pooling] = {}


def pooling(name: str, width: int):
    def register(fn: Callable[[nn.Module, torch.Tensor], torch.Tensor]):
        POOLINGS[name] = Pooling(name, width, fn)
        return fn
    return register


def get_pooling(name: str) -> Pooling:
    if name not in POOLINGS:
        raise ValueError(f"backbone.features={name!r}; choose one of {tuple(POOLINGS)}")
    return POOLINGS[name]


@pooling("cls", 1)
def cls(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.forward_features(x)[:, 0]


@pooling("cls_avg", 2)
def cls_avg(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    tokens = model.forward_features(x)
    patches = tokens[:, getattr(model, "num_prefix_tokens", 1):]
    return torch.cat([tokens[:, 0], patches.mean(dim=1)], dim=1)


@pooling("last4", 4)
def last4(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if len(model.blocks) < 4:
        raise ValueError(f"backbone.features=last4 needs at least 4 blocks; this model has {len(model.blocks)}")
    # timm's intermediate-layer API serves plain ViTs (DINO, DINOv2) and RoPE ViTs (DINOv3, an Eva) alike
    outs = model.forward_intermediates(x, indices=4, norm=True, return_prefix_tokens=True, output_fmt="NLC",
                                       intermediates_only=True)
    return torch.cat([prefix[:, 0] for _, prefix in outs], dim=1)
