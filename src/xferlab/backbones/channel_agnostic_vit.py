"""OpenPhenom's encoder ViT (`encoder.vit_backbone` of the released file), written here so that it
computes what its publisher's code computes with no timm model at all.

Read from recursionpharma/maes_microscopy (commit e2faf37): `vit.py` (`vit_small_patch16_256`,
`ChannelAgnosticPatchEmbed`, `ChannelAgnosticViT._pos_embed`, `channel_agnostic_vit`,
`generate_2d_sincos_pos_embeddings`), `mae_modules.py` (`MAEEncoder`), and timm v0.9.7's
`VisionTransformer` (`forward_features`, the `norm` / `fc_norm` choice), which it subclasses:
- patch embedding: one `Conv2d(1, D, patch, stride=patch)` applied to every channel, the results
  stacked on a new axis 2 and flattened, so the tokens are channel-major (`C x grid^2`);
- a class token in front; the position embeddings (sin-cos, one grid repeated per channel up to
  `max_in_chans`, a zero row for the class token; stored in the file) sliced to the
  `1 + C x grid^2` tokens present and added;
- `norm_pre` is Identity (no pre-norm), patch dropout off; the parallel-scaling blocks
  (`parallel_block`);
- `global_pool="avg"` with `fc_norm=None` makes timm use an `fc_norm` after pooling and an
  Identity `norm`: `forward_features` returns the blocks' output unnormed, and `fc_norm` (in the
  file) is used only by `forward_head`, which OpenPhenom's embedding does not call. With
  `global_pool="token"` it is the other way round (`norm` after the blocks, no `fc_norm`).

Parameter names equal the released keys (after `encoder.vit_backbone.`), so the file loads
strictly into this module.
"""

from __future__ import annotations

import torch
from torch import nn

from xferlab.backbones.parallel_block import LAYER_NORM_EPS, ParallelScalingBlock


class ChannelAgnosticPatchEmbed(nn.Module):
    """One single-channel patch projection applied to every channel: `(B, C, H, W)` ->
    `(B, C x H/p x W/p, D)`, channel-major."""

    def __init__(self, dim: int, patch: int):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.proj(x.reshape(b * c, 1, h, w))  # (B*C, D, h', w')
        return tokens.flatten(2).transpose(1, 2).reshape(b, -1, tokens.shape[1])


class ChannelAgnosticViT(nn.Module):
    """The encoder: `forward_features` gives the token features `(B, 1 + C x grid^2, D)` of
    images already standardised."""

    def __init__(self, dim: int, depth: int, heads: int, hidden: int, patch: int, grid: int, max_channels: int,
                 avg_pool: bool = True):
        super().__init__()
        self.grid, self.max_channels = grid, max_channels
        self.num_features = dim
        self.patch_embed = ChannelAgnosticPatchEmbed(dim, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + max_channels * grid * grid, dim), requires_grad=False)
        self.blocks = nn.Sequential(*(ParallelScalingBlock(dim, heads, hidden) for _ in range(depth)))
        self.norm = nn.Identity() if avg_pool else nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.fc_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS) if avg_pool else nn.Identity()  # forward_head's only

    @property
    def image_size(self) -> int:
        return self.grid * self.patch_embed.patch

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.max_channels:
            raise ValueError(f"OpenPhenom embeds at most {self.max_channels} channels; the input has {x.shape[1]}")
        if tuple(x.shape[-2:]) != (self.image_size,) * 2:
            raise ValueError(f"OpenPhenom takes {self.image_size} px images (its position embeddings cover a "
                             f"{self.grid} x {self.grid} grid); got {tuple(x.shape[-2:])}")
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1)
        tokens = tokens + self.pos_embed[:, : tokens.shape[1]]
        return self.norm(self.blocks(tokens))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)
