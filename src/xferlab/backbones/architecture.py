"""Reading a ViT's architecture from its weights: patch size, width, depth, input channels,
image size and MLP ratio come from tensor shapes, so a checkpoint defines the model it fits."""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from xferlab.backbones.weights import WeightsError

HEAD_DIM = 64  # DINO / DeiT / timm ViTs: heads = width / 64 (ViT-Ti 3, ViT-S 6, ViT-B 12, ViT-L 16)


def vit_kwargs_from_state(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """timm VisionTransformer keyword arguments that fit a ViT state dict."""
    if "patch_embed.proj.weight" not in state:
        raise WeightsError("not a ViT state dict: no `patch_embed.proj.weight` "
                           f"(first keys: {sorted(state)[:5]})")
    width, in_chans, patch, patch_w = state["patch_embed.proj.weight"].shape
    if patch != patch_w:
        raise WeightsError(f"non-square patches {patch}x{patch_w} are not supported")
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    kwargs: dict[str, Any] = {"in_chans": int(in_chans), "patch_size": int(patch), "embed_dim": int(width),
                              "depth": depth, "num_heads": max(1, int(width) // HEAD_DIM)}
    if "blocks.0.mlp.fc1.weight" in state:
        kwargs["mlp_ratio"] = state["blocks.0.mlp.fc1.weight"].shape[0] / width
    if "pos_embed" in state:
        tokens = state["pos_embed"].shape[1]
        grid = math.isqrt(tokens)
        if tokens - grid * grid > 8:  # at most a few prefix tokens (class, registers)
            raise WeightsError(f"pos_embed of shape {tuple(state['pos_embed'].shape)} is not a square grid")
        kwargs["img_size"] = grid * int(patch)
    return kwargs


def check_against_config(found: dict[str, Any], configured: dict[str, Any], source: str) -> None:
    """Fail when the config asks for an architecture other than the checkpoint's."""
    differ = {k: (configured[k], v) for k, v in found.items() if k in configured and configured[k] != v}
    if differ:
        lines = ", ".join(f"{k}: config {c} vs checkpoint {v}" for k, (c, v) in sorted(differ.items()))
        raise WeightsError(f"{source} does not fit the configured backbone ({lines}); remove these keys "
                           "from backbone.model_kwargs / backbone.in_channels or use a matching checkpoint")
