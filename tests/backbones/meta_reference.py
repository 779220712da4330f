"""DINOv2 and DINOv3 as Meta's code computes them, written here with plain tensor ops on tensors in
Meta's released layout (Meta's key names), sharing no code with timm or xferlab: the reference the
DINOv2 / DINOv3 backbones must reproduce.

Read from facebookresearch/dinov2 (`dinov2/models/vision_transformer.py`: `prepare_tokens_with_masks`,
`interpolate_pos_encoding`, `forward_features`, `get_intermediate_layers`; `dinov2/layers/block.py`;
`dinov2/hub/backbones.py`: how each released model is built) and facebookresearch/dinov3
(`dinov3/models/vision_transformer.py`, `dinov3/layers/attention.py`, `dinov3/layers/block.py`,
`dinov3/layers/rope_position_encoding.py`, `dinov3/hub/backbones.py`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

WIDTH, HEADS, DEPTH = 128, 2, 4  # head width 64, as the released S and B models
STORAGE_TOKENS = 4  # DINOv3 S/16, B/16 (`n_storage_tokens=4`)

# dinov2/hub/backbones.py: `dinov2_vits14` / `dinov2_vitb14` keep the model's defaults
# (interpolate_antialias=False, interpolate_offset=0.1); the `*_reg` models pass antialias=True, offset=0.0
DINOV2_HUB = {  # backbone config -> (register tokens, antialias, offset)
    "dinov2_vits14": (0, False, 0.1), "dinov2_vitb14": (0, False, 0.1),
    "dinov2_vits14_reg4": (4, True, 0.0), "dinov2_vitb14_reg4": (4, True, 0.0),
}


def _random(seed: int):
    g = torch.Generator().manual_seed(seed)
    return lambda *shape, std: torch.randn(*shape, generator=g) * std


def _blocks(r, masked_qkv_bias: bool) -> dict[str, torch.Tensor]:
    """Blocks far from their initialisation: layer scales ~0.3 (released models start at 1e-5), norms
    and biases off 1 and 0, projections of unit gain, so every block and every token matters."""
    d, hidden, state = WIDTH, 4 * WIDTH, {}
    for i in range(DEPTH):
        b = f"blocks.{i}."
        state.update({
            b + "norm1.weight": 1 + r(d, std=0.2), b + "norm1.bias": r(d, std=0.1),
            b + "attn.qkv.weight": r(3 * d, d, std=1.5 * d ** -0.5), b + "attn.qkv.bias": r(3 * d, std=0.1),
            b + "attn.proj.weight": r(d, d, std=d ** -0.5), b + "attn.proj.bias": r(d, std=0.1),
            b + "ls1.gamma": 0.3 + r(d, std=0.05),
            b + "norm2.weight": 1 + r(d, std=0.2), b + "norm2.bias": r(d, std=0.1),
            b + "mlp.fc1.weight": r(hidden, d, std=d ** -0.5), b + "mlp.fc1.bias": r(hidden, std=0.1),
            b + "mlp.fc2.weight": r(d, hidden, std=hidden ** -0.5), b + "mlp.fc2.bias": r(d, std=0.1),
            b + "ls2.gamma": 0.3 + r(d, std=0.05),
        })
        if masked_qkv_bias:  # DINOv3 S/B: `LinearKMaskedBias`, released with zero biases (timm drops them)
            state[b + "attn.qkv.bias"] = torch.zeros(3 * d)
            state[b + "attn.qkv.bias_mask"] = torch.cat([torch.ones(d), torch.zeros(d), torch.ones(d)])
    return state


def dinov2_state(patch: int, grid: int, registers: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A DINOv2 `*_pretrain.pth` state: class position at `pos_embed[:, 0]`, a `grid` x `grid` patch grid,
    `register_tokens` (no position) for the `*_reg4` files, the training-only `mask_token`."""
    r = _random(seed)
    state = {"cls_token": r(1, 1, WIDTH, std=0.5), "pos_embed": r(1, 1 + grid * grid, WIDTH, std=0.5),
             "mask_token": torch.zeros(1, WIDTH),
             "patch_embed.proj.weight": r(WIDTH, 3, patch, patch, std=0.05), "patch_embed.proj.bias": r(WIDTH, std=0.1),
             "norm.weight": 1 + r(WIDTH, std=0.2), "norm.bias": r(WIDTH, std=0.1), **_blocks(r, False)}
    if registers:
        state["register_tokens"] = r(1, registers, WIDTH, std=0.5)
    return state


def dinov3_state(patch: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """A DINOv3 `*_pretrain_lvd1689m-*.pth` state: 4 `storage_tokens`, no position embedding, and the RoPE
    periods as training saved them: `RopePositionEmbedding._init_weights` under the training default
    `pos_embed_rope_dtype="bf16"`, i.e. `base ** (2 * arange(D_head // 4) / (D_head // 2))` in bfloat16."""
    r = _random(seed)
    d_head = WIDTH // HEADS
    periods = 100.0 ** (2 * torch.arange(d_head // 4, dtype=torch.bfloat16) / (d_head // 2))
    return {"cls_token": r(1, 1, WIDTH, std=0.5), "storage_tokens": r(1, STORAGE_TOKENS, WIDTH, std=0.5),
            "mask_token": torch.zeros(1, WIDTH), "rope_embed.periods": periods,
            "patch_embed.proj.weight": r(WIDTH, 3, patch, patch, std=0.05), "patch_embed.proj.bias": r(WIDTH, std=0.1),
            "norm.weight": 1 + r(WIDTH, std=0.2), "norm.bias": r(WIDTH, std=0.1), **_blocks(r, True)}


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def rotate(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """dinov3 `rope_apply`: x * cos + rotate_half(x) * sin, rotate_half([a, b]) = [-b, a]."""
    a, b = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-b, a], dim=-1) * sin


def block(s: dict[str, torch.Tensor], i: int, x: torch.Tensor, eps: float, rope=None) -> torch.Tensor:
    """Pre-norm block: x + ls1 * attn(norm1(x)), then x + ls2 * mlp(norm2(x)). With `rope` (sin, cos for
    the patch tokens), q and k of the last H*W tokens are rotated; the class and storage tokens are not
    (`SelfAttention.apply_rope`: prefix = N - H*W)."""
    p = f"blocks.{i}."
    n, length, d = x.shape
    h = layer_norm(x, s[p + "norm1.weight"], s[p + "norm1.bias"], eps)
    bias = s[p + "attn.qkv.bias"] * s.get(p + "attn.qkv.bias_mask", 1.0)
    qkv = (h @ s[p + "attn.qkv.weight"].T + bias).reshape(n, length, 3, HEADS, d // HEADS)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (n, heads, length, d_head)
    if rope is not None:
        sin, cos = rope
        prefix = length - sin.shape[0]
        q = torch.cat([q[:, :, :prefix], rotate(q[:, :, prefix:], sin, cos)], dim=2)
        k = torch.cat([k[:, :, :prefix], rotate(k[:, :, prefix:], sin, cos)], dim=2)
    attn = (q @ k.transpose(-2, -1) / math.sqrt(d // HEADS)).softmax(dim=-1)
    a = (attn @ v).transpose(1, 2).reshape(n, length, d) @ s[p + "attn.proj.weight"].T + s[p + "attn.proj.bias"]
    x = x + s[p + "ls1.gamma"] * a
    h = layer_norm(x, s[p + "norm2.weight"], s[p + "norm2.bias"], eps)
    h = h @ s[p + "mlp.fc1.weight"].T + s[p + "mlp.fc1.bias"]
    h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))  # nn.GELU (exact)
    return x + s[p + "ls2.gamma"] * (h @ s[p + "mlp.fc2.weight"].T + s[p + "mlp.fc2.bias"])


def poolings(s: dict[str, torch.Tensor], outs: list[torch.Tensor], prefix: int, eps: float) -> dict[str, torch.Tensor]:
    """`cls`: x_norm_clstoken; `cls_avg`: it and the mean of x_norm_patchtokens (registers left out);
    `last4`: `get_intermediate_layers(n=4, return_class_token=True, norm=True)`'s class tokens."""
    normed = layer_norm(outs[-1], s["norm.weight"], s["norm.bias"], eps)
    last4 = [layer_norm(o, s["norm.weight"], s["norm.bias"], eps)[:, 0] for o in outs[-4:]]
    return {"cls": normed[:, 0], "cls_avg": torch.cat([normed[:, 0], normed[:, prefix:].mean(1)], dim=1),
            "last4": torch.cat(last4, dim=1)}


def patches(s: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    w = s["patch_embed.proj.weight"]
    t = F.conv2d(x, w, s["patch_embed.proj.bias"], stride=w.shape[-1])  # (n, d, rows, cols)
    return t.flatten(2).transpose(1, 2), t.shape[-2], t.shape[-1]


def dinov2_positions(pos_embed: torch.Tensor, rows: int, cols: int, antialias: bool, offset: float) -> torch.Tensor:
    """`interpolate_pos_encoding`: unchanged when the grid is the stored one; else the patch positions
    resized in float32, bicubic, by scale factors (rows + offset) / M, (cols + offset) / M when the offset
    is set (Meta's `w0`, `h0`: `B, nc, w, h = x.shape`, so its `w` counts rows), by size otherwise; the
    class position kept."""
    n = pos_embed.shape[1] - 1
    m = math.isqrt(n)
    if rows * cols == n and rows == cols:
        return pos_embed
    pos = pos_embed.float()
    grid = pos[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
    kwargs = {"scale_factor": ((rows + offset) / m, (cols + offset) / m)} if offset else {"size": (rows, cols)}
    grid = F.interpolate(grid, mode="bicubic", antialias=antialias, **kwargs)
    assert grid.shape[-2:] == (rows, cols)
    return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)], dim=1)


def dinov2_forward(s: dict[str, torch.Tensor], x: torch.Tensor, antialias: bool, offset: float):
    """DinoVisionTransformer with its released settings (LayerNorm eps 1e-6): class token, + positions,
    registers inserted after the class token (they get no position), blocks, final norm."""
    t, rows, cols = patches(s, x)
    t = torch.cat([s["cls_token"].expand(len(x), -1, -1), t], dim=1)
    t = t + dinov2_positions(s["pos_embed"], rows, cols, antialias, offset)
    registers = s.get("register_tokens")
    if registers is not None:
        t = torch.cat([t[:, :1], registers.expand(len(x), -1, -1), t[:, 1:]], dim=1)
    outs = []
    for i in range(DEPTH):
        t = block(s, i, t, 1e-6)
        outs.append(t)
    return poolings(s, outs, 1 + (0 if registers is None else registers.shape[1]), 1e-6)


def dinov3_rope(periods: torch.Tensor, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`RopePositionEmbedding.forward` (normalize_coords="separate", eval: no coordinate augmentation),
    with the hub's `pos_embed_rope_dtype="fp32"`: the stored periods loaded into a float32 buffer."""
    periods = periods.float()
    ch = torch.arange(0.5, rows, dtype=torch.float32) / rows
    cw = torch.arange(0.5, cols, dtype=torch.float32) / cols
    coords = torch.stack(torch.meshgrid(ch, cw, indexing="ij"), dim=-1).flatten(0, 1)
    coords = 2.0 * coords - 1.0
    angles = (2 * math.pi * coords[:, :, None] / periods[None, None, :]).flatten(1, 2).tile(2)
    return torch.sin(angles), torch.cos(angles)


def dinov3_forward(s: dict[str, torch.Tensor], x: torch.Tensor):
    """DinoVisionTransformer as `dinov3_vits16` / `dinov3_vitb16` build it: "layernormbf16" (LayerNorm eps
    1e-5), class token then storage tokens then patches, RoPE in every block, one final norm for all."""
    t, rows, cols = patches(s, x)
    t = torch.cat([s["cls_token"].expand(len(x), -1, -1), s["storage_tokens"].expand(len(x), -1, -1), t], dim=1)
    rope = dinov3_rope(s["rope_embed.periods"], rows, cols)
    outs = []
    for i in range(DEPTH):
        t = block(s, i, t, 1e-5, rope)
        outs.append(t)
    return poolings(s, outs, 1 + s["storage_tokens"].shape[1], 1e-5)
