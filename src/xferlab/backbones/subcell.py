"""SubCell encoders (Gupta et al. 2024, "SubCell: Proteome-aware vision foundation models for
microscopy"; CZI / Lundberg lab): a ViT-B/16 trained on Human Protein Atlas single cells, and a
gated attention pooler whose output is SubCell's cell embedding.

The released encoder files (listed by SubCellPortable, e.g. `DNA-Protein_MAE-CellS-ProtS-Pool.pth`)
are plain state dicts with two parts:
- `encoder.*`: a ViT in the layout of Hugging Face's `ViTModel` without its pooler:
  `embeddings.{cls_token, position_embeddings, patch_embeddings.projection}`,
  `encoder.layer.<i>.{attention.attention.{query,key,value}, attention.output.dense,
  intermediate.dense, output.dense, layernorm_before, layernorm_after}`, `layernorm`;
- `pool_model.*`: the pooler, `attention_v.1` (tanh branch), `attention_u.1` (GELU branch) and
  `attention` (one score per head); index 0 of each branch is a dropout.

The modules below are written for that layout so the file loads strictly, every key in place; the
architecture (width, depth, patch, channels, position grid, pooler width and heads) is read from the
tensor shapes. Embedding as SubCellPortable's inference does: each cell's stack scaled by one
minimum and one maximum over all its channels and pixels (`backbone.preprocess.intensity:
minmax_stack`, `(x - min) / (max - min + 1e-6)`), the position embeddings interpolated (bicubic) to
the input's patch grid, all tokens after the final norm pooled by the gated attention (heads x width).
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from xferlab.backbones.registry import Backbone
from xferlab.backbones.weights import WeightsError, load_strict

log = logging.getLogger(__name__)

HEAD_DIM = 64
LAYER_NORM_EPS = 1e-12  # Hugging Face ViT's default, which SubCell's config keeps
FEATURES = ("pool", "cls")  # pool: SubCell's embedding (gated attention over all tokens); cls: the class token


class Dense(nn.Module):
    """One linear layer under the attribute name `dense` (the Hugging Face layout)."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.dense = nn.Linear(n_in, n_out)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (proj(x).view(b, n, self.heads, d // self.heads).transpose(1, 2)
                   for proj in (self.query, self.key, self.value))
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)


class AttentionBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attention = SelfAttention(dim, heads)
        self.output = Dense(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output.dense(self.attention(x))


class Layer(nn.Module):
    """A pre-norm transformer block."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.attention = AttentionBlock(dim, heads)
        self.intermediate = Dense(dim, hidden)
        self.output = Dense(hidden, dim)
        self.layernorm_before = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.layernorm_after = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.layernorm_before(x))
        return x + self.output.dense(F.gelu(self.intermediate.dense(self.layernorm_after(x))))


class PatchEmbeddings(nn.Module):
    def __init__(self, in_chans: int, dim: int, patch: int):
        super().__init__()
        self.patch = patch
        self.projection = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)


class Embeddings(nn.Module):
    def __init__(self, in_chans: int, dim: int, patch: int, grid: int):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position_embeddings = nn.Parameter(torch.zeros(1, grid * grid + 1, dim))
        self.patch_embeddings = PatchEmbeddings(in_chans, dim, patch)

    def positions(self, rows: int, cols: int) -> torch.Tensor:
        """The position embeddings for a `rows x cols` patch grid (bicubic from the stored grid)."""
        stored = self.position_embeddings
        grid = math.isqrt(stored.shape[1] - 1)
        if (rows, cols) == (grid, grid):
            return stored
        patches = stored[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, size=(rows, cols), mode="bicubic", align_corners=False)
        return torch.cat([stored[:, :1], patches.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embeddings.projection(x)
        rows, cols = tokens.shape[-2:]
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens.flatten(2).transpose(1, 2)], dim=1)
        return tokens + self.positions(rows, cols)


class Layers(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, depth: int):
        super().__init__()
        self.layer = nn.ModuleList(Layer(dim, heads, hidden) for _ in range(depth))


class ViTEncoder(nn.Module):
    """The `encoder.*` part: tokens `(B, 1 + patches, D)` after the final norm."""

    def __init__(self, in_chans: int, dim: int, depth: int, patch: int, grid: int, hidden: int):
        super().__init__()
        self.patch = patch
        self.embeddings = Embeddings(in_chans, dim, patch, grid)
        self.encoder = Layers(dim, max(1, dim // HEAD_DIM), hidden, depth)
        self.layernorm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(x)
        for layer in self.encoder.layer:
            x = layer(x)
        return self.layernorm(x)


class GatedAttentionPooler(nn.Module):
    """The `pool_model.*` part: per head, softmax over tokens of `attention(tanh(V x) * gelu(U x))`;
    the heads' weighted token means, concatenated."""

    def __init__(self, dim: int, hidden: int, heads: int):
        super().__init__()
        self.attention_v = nn.Sequential(nn.Dropout(0.0), nn.Linear(dim, hidden), nn.Tanh())
        self.attention_u = nn.Sequential(nn.Dropout(0.0), nn.Linear(dim, hidden), nn.GELU())
        self.attention = nn.Linear(hidden, heads)
        self.out_dim = dim * heads

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        weights = self.attention(self.attention_v(tokens) * self.attention_u(tokens)).softmax(dim=1)  # (B, N, H)
        return torch.einsum("bnh,bnd->bhd", weights, tokens).flatten(1)


class SubCellModel(nn.Module):
    def __init__(self, encoder: ViTEncoder, pool_model: GatedAttentionPooler):
        super().__init__()
        self.encoder = encoder
        self.pool_model = pool_model
        self.num_features = pool_model.out_dim

    def forward(self, x: torch.Tensor, features: str = "pool") -> torch.Tensor:
        tokens = self.encoder(x)
        return self.pool_model(tokens) if features == "pool" else tokens[:, 0]


def architecture(state: dict[str, torch.Tensor], source: str) -> dict[str, int]:
    """The model's sizes, read from a SubCell encoder file's tensors."""
    needed = ("encoder.embeddings.patch_embeddings.projection.weight", "encoder.embeddings.position_embeddings",
              "encoder.encoder.layer.0.intermediate.dense.weight", "pool_model.attention_v.1.weight",
              "pool_model.attention.weight")
    absent = [k for k in needed if k not in state]
    if absent:
        raise WeightsError(f"{source} is not a SubCell encoder file (no {absent}; first keys: {sorted(state)[:5]}). "
                           "Use one of the released encoders (e.g. DNA-Protein_MAE-CellS-ProtS-Pool.pth)")
    dim, in_chans, patch, _ = state["encoder.embeddings.patch_embeddings.projection.weight"].shape
    positions = state["encoder.embeddings.position_embeddings"].shape[1] - 1
    grid = math.isqrt(positions)
    if grid * grid != positions:
        raise WeightsError(f"{source}: position embeddings for {positions} patches are not a square grid")
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"encoder\.encoder\.layer\.(\d+)\.", k)))
    return {"in_chans": int(in_chans), "dim": int(dim), "patch": int(patch), "grid": grid, "depth": depth,
            "hidden": int(state["encoder.encoder.layer.0.intermediate.dense.weight"].shape[0]),
            "pool_hidden": int(state["pool_model.attention_v.1.weight"].shape[0]),
            "pool_heads": int(state["pool_model.attention.weight"].shape[0])}


def subcell_model(sizes: dict[str, int]) -> SubCellModel:
    encoder = ViTEncoder(sizes["in_chans"], sizes["dim"], sizes["depth"], sizes["patch"], sizes["grid"], sizes["hidden"])
    return SubCellModel(encoder, GatedAttentionPooler(sizes["dim"], sizes["pool_hidden"], sizes["pool_heads"]))


class SubCellBackbone(Backbone):
    def __init__(self, model: SubCellModel, *, name: str, in_channels: Sequence[str], features: str,
                 preprocess: dict[str, Any], sizes: dict[str, int], source: str, file_sha256: str):
        super().__init__(model, name=name, arch="subcell", in_channels=in_channels, features=features,
                         preprocess=preprocess, model_kwargs=sizes, weights_source=source, file_sha256=file_sha256)

    @property
    def embed_dim(self) -> int:
        if self.features == "pool":
            return int(self.model.num_features)
        return int(self.model.encoder.layernorm.normalized_shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, self.features)


def build_subcell(name: str, in_channels: Sequence[str], weights: str | None, preprocess: dict[str, Any],
                  init: str = "weights", features: str = "pool", download: str = "auto",
                  trust_checkpoint: bool = False, required_channels: Sequence[str] | None = None) -> SubCellBackbone:
    """A SubCell encoder from its released file (`weights`: a path or a file name in the weights
    folder, downloaded there first when it is a public one), loaded strictly. `required_channels`
    is for the check before the jobs (`checks.channels.channel_problem`), not the model."""
    from xferlab.backbones.checkpoints import released_file
    from xferlab.backbones.registry import check_patch_grid

    if features not in FEATURES:
        raise ValueError(f"backbone.features={features!r} for SubCell; choose one of {FEATURES}")
    loaded, source = released_file(name, weights, init, download, trust_checkpoint, "a SubCell encoder")
    sizes = architecture(loaded.state, source)
    if sizes["in_chans"] != len(in_channels):
        raise WeightsError(f"{source} takes {sizes['in_chans']} channels but backbone.in_channels={list(in_channels)} "
                           f"names {len(in_channels)}: use the SubCell config made for this file (rybg 4, rbg / ybg 3, "
                           "bg 2)")
    model = subcell_model(sizes)
    load_strict(model, loaded.state, source)
    check_patch_grid(sizes["patch"], preprocess.get("input_size"), name)
    backbone = SubCellBackbone(model, name=name, in_channels=in_channels, features=features, preprocess=preprocess,
                               sizes=sizes, source=source, file_sha256=loaded.file_sha256)
    log.info("backbone %s (SubCell): weights %s, sha256 %s", name, source, loaded.file_sha256[:16])
    return backbone
