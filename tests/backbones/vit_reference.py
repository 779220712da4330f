"""A ViT forward pass written from the raw tensors of a state dict (patch embedding, blocks, final
norm, CLS token), independent of timm: the reference that loaded backbones must reproduce."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def reference_tokens(state: dict[str, torch.Tensor], x: torch.Tensor, num_heads: int) -> list[torch.Tensor]:
    """Token sequences after every block (before the final norm)."""
    w, b = state["patch_embed.proj.weight"], state["patch_embed.proj.bias"]
    p = w.shape[-1]
    tokens = F.conv2d(x, w, b, stride=p).flatten(2).transpose(1, 2)
    tokens = torch.cat([state["cls_token"].expand(len(x), -1, -1), tokens], dim=1) + state["pos_embed"]
    dim = tokens.shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    out = []
    for i in range(depth):
        s = {k[len(f"blocks.{i}."):]: v for k, v in state.items() if k.startswith(f"blocks.{i}.")}
        h = F.layer_norm(tokens, (dim,), s["norm1.weight"], s["norm1.bias"], eps=1e-6)
        qkv = (h @ s["attn.qkv.weight"].T + s["attn.qkv.bias"]).reshape(len(x), -1, 3, num_heads, dim // num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) / math.sqrt(dim // num_heads)).softmax(dim=-1)
        a = (attn @ v).transpose(1, 2).reshape(len(x), -1, dim)
        tokens = tokens + a @ s["attn.proj.weight"].T + s["attn.proj.bias"]
        h = F.layer_norm(tokens, (dim,), s["norm2.weight"], s["norm2.bias"], eps=1e-6)
        h = F.gelu(h @ s["mlp.fc1.weight"].T + s["mlp.fc1.bias"])
        tokens = tokens + h @ s["mlp.fc2.weight"].T + s["mlp.fc2.bias"]
        out.append(tokens)
    return out


def reference_cls(state: dict[str, torch.Tensor], x: torch.Tensor, num_heads: int) -> torch.Tensor:
    tokens = reference_tokens(state, x, num_heads)[-1]
    return F.layer_norm(tokens, (tokens.shape[-1],), state["norm.weight"], state["norm.bias"], eps=1e-6)[:, 0]


def random_vit_state(in_chans=2, patch=8, img=32, dim=128, depth=4, mlp_ratio=4, seed=0) -> dict[str, torch.Tensor]:
    """A ViT state dict with DINO / timm key names and random values (not timm-initialised)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape, scale=0.05: torch.randn(*shape, generator=g) * scale  # noqa: E731
    n = (img // patch) ** 2
    state = {"cls_token": r(1, 1, dim), "pos_embed": r(1, n + 1, dim),
             "patch_embed.proj.weight": r(dim, in_chans, patch, patch), "patch_embed.proj.bias": r(dim),
             "norm.weight": 1 + r(dim), "norm.bias": r(dim)}
    hidden = dim * mlp_ratio
    for i in range(depth):
        state.update({
            f"blocks.{i}.norm1.weight": 1 + r(dim), f"blocks.{i}.norm1.bias": r(dim),
            f"blocks.{i}.attn.qkv.weight": r(3 * dim, dim), f"blocks.{i}.attn.qkv.bias": r(3 * dim),
            f"blocks.{i}.attn.proj.weight": r(dim, dim), f"blocks.{i}.attn.proj.bias": r(dim),
            f"blocks.{i}.norm2.weight": 1 + r(dim), f"blocks.{i}.norm2.bias": r(dim),
            f"blocks.{i}.mlp.fc1.weight": r(hidden, dim), f"blocks.{i}.mlp.fc1.bias": r(hidden),
            f"blocks.{i}.mlp.fc2.weight": r(dim, hidden), f"blocks.{i}.mlp.fc2.bias": r(dim),
        })
    return state
