"""The parallel-scaling transformer block of OpenPhenom's encoder, computed as its publisher's
timm computes it, whatever timm is installed.

Recursion's maes_microscopy builds the encoder with `timm.models.vision_transformer.
ParallelScalingBlock` (`vit.py`: `qkv_bias=False, qk_norm=True, init_values=1e-4`; its
requirements pin timm 0.9.7 / 1.0.11). Read from timm v0.9.7's `vision_transformer.py`
(`ParallelScalingBlock.forward`; 1.0.11's is the same), for `qkv_bias=False`:

    y = in_norm(x)
    y = F.linear(y, in_proj.weight, cat((zeros(3 * dim), mlp_bias)))   # the fused bias
    x_mlp, q, k, v = split(y, [hidden, dim, dim, dim])
    q, k = q_norm(q by head), k_norm(k by head)                         # LayerNorm over head_dim
    x_attn = attn_out_proj(softmax(q k^T / sqrt(head_dim)) v)
    x = x + ls(x_attn + mlp_out_proj(gelu(x_mlp)))                      # layer scale gamma

The bias vector `[zeros(3 dim), mlp_bias]` is laid over the output `[mlp (hidden) | q | k | v]`:
with `hidden = 4 dim` the first `3 dim` MLP outputs get no bias, the last `dim` get
`mlp_bias[:dim]`, and q, k, v get `mlp_bias[dim:2 dim]`, `[2 dim:3 dim]`, `[3 dim:4 dim]`. The
released weights were trained with that placement. Later timm versions (1.0.31 here) add
`mlp_bias` to `x_mlp` after the split instead: other numbers from the same weights, hence this
module. Parameter names are timm's, so the released keys load as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LAYER_NORM_EPS = 1e-6  # timm VisionTransformer's norm_layer (LayerNorm, eps 1e-6), also for q_norm / k_norm


class LayerScale(nn.Module):
    """timm's LayerScale: one learned factor per channel (`gamma`)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class ParallelScalingBlock(nn.Module):
    """Attention and MLP in parallel from one fused input projection (timm 0.9.7's arithmetic,
    `qkv_bias=False`, QK norm, layer scale)."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not a multiple of {heads} heads")
        self.dim, self.heads, self.hidden = dim, heads, hidden
        self.in_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.in_proj = nn.Linear(dim, hidden + 3 * dim, bias=False)
        self.mlp_bias = nn.Parameter(torch.zeros(hidden))
        self.q_norm = nn.LayerNorm(dim // heads, eps=LAYER_NORM_EPS)
        self.k_norm = nn.LayerNorm(dim // heads, eps=LAYER_NORM_EPS)
        self.attn_out_proj = nn.Linear(dim, dim)
        self.mlp_out_proj = nn.Linear(hidden, dim)
        self.ls = LayerScale(dim)

    def fused_bias(self) -> torch.Tensor:
        """`cat((zeros(3 dim), mlp_bias))`, laid over `[mlp | q | k | v]` as timm 0.9.7 lays it."""
        return torch.cat((self.mlp_bias.new_zeros(3 * self.dim), self.mlp_bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        y = F.linear(self.in_norm(x), self.in_proj.weight, self.fused_bias())
        x_mlp, q, k, v = torch.split(y, [self.hidden, self.dim, self.dim, self.dim], dim=-1)
        q = self.q_norm(q.view(b, n, self.heads, -1)).transpose(1, 2)
        k = self.k_norm(k.view(b, n, self.heads, -1)).transpose(1, 2)
        v = v.view(b, n, self.heads, -1).transpose(1, 2)
        x_attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, self.dim)
        return x + self.ls(self.attn_out_proj(x_attn) + self.mlp_out_proj(F.gelu(x_mlp)))
