"""OpenPhenom (Recursion's CA-MAE ViT-S/16; Kraus et al., CVPR 2024): a channel-agnostic masked
autoencoder. Every channel is cut into 16 px patches by one shared single-channel projection, so a
`C`-channel image becomes `C x 256` patch tokens (channel-major) plus a class token; fixed 2D sin-cos
position embeddings, repeated per channel up to the model's maximum number of channels, are added
to the first `1 + C x 256` tokens. Any number of channels up to that maximum embeds without empty
slots or replicated channels.

The released file (`model.safetensors` of the Hugging Face repository recursionpharma/OpenPhenom)
holds the whole autoencoder: the encoder, a timm VisionTransformer under `encoder.vit_backbone.`
(parallel-scaling blocks with QK norm and layer scale, no qkv bias), and the reconstruction decoder
(`decoder.`, `encoder_decoder_proj.`, `decoder_pred.`). The encoder loads strictly; the decoder's
keys are set aside by those names (anything else unexpected is an error).

Embedded as OpenPhenom's `predict` does: each image and channel self-standardised (instance norm,
after scaling pixels to [0, 1]), the encoder's token features (`forward_features`), and the mean
of the patch tokens (`features: mean`, 384 dims) or one mean per channel, concatenated
(`features: channelwise`, 384 x C).
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import ParallelScalingBlock
from torch import nn

from xferlab.backbones.registry import Backbone
from xferlab.backbones.weights import WeightsError, load_strict

log = logging.getLogger(__name__)

ENCODER = "encoder.vit_backbone."
DECODER_PREFIXES = ("decoder.", "encoder_decoder_proj.", "decoder_pred.")
FEATURES = ("mean", "channelwise")
HEAD_DIM = 64


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


class ChannelAgnosticEncoder(nn.Module):
    """The encoder (`vit_backbone`): patch tokens of every channel, class token, the first
    `1 + C x grid^2` position embeddings, the blocks and the final norm (timm's components)."""

    def __init__(self, vit_backbone: nn.Module, grid: int, max_channels: int):
        super().__init__()
        self.vit_backbone = vit_backbone
        self.grid = grid
        self.max_channels = max_channels
        self.num_features = int(vit_backbone.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Token features `(B, 1 + C x grid^2, D)` of images already standardised."""
        vit = self.vit_backbone
        if x.shape[1] > self.max_channels:
            raise ValueError(f"OpenPhenom embeds at most {self.max_channels} channels; the input has {x.shape[1]}")
        if x.shape[-2:] != (self.grid * vit.patch_embed.patch,) * 2:
            raise ValueError(f"OpenPhenom takes {self.grid * vit.patch_embed.patch} px images (its position "
                             f"embeddings cover a {self.grid} x {self.grid} grid); got {tuple(x.shape[-2:])}")
        tokens = vit.patch_embed(x)
        tokens = torch.cat([vit.cls_token.expand(len(x), -1, -1), tokens], dim=1)
        tokens = tokens + vit.pos_embed[:, : tokens.shape[1]]
        return vit.norm(vit.blocks(vit.norm_pre(tokens)))


def self_standardise(x: torch.Tensor) -> torch.Tensor:
    """Each image and channel to zero mean and unit variance (instance norm, eps 1e-5)."""
    return F.instance_norm(x, eps=1e-5)


def architecture(state: dict[str, torch.Tensor], input_size: int | None, source: str) -> dict[str, Any]:
    """The encoder's sizes from its tensors; the position grid from the image size it takes
    (`backbone.preprocess.input_size`), the maximum number of channels from the rest."""
    needed = ("patch_embed.proj.weight", "pos_embed", "cls_token", "blocks.0.in_proj.weight")
    absent = [ENCODER + k for k in needed if k not in state]
    if absent:
        raise WeightsError(f"{source} is not an OpenPhenom (CA-MAE) file: no {absent}")
    dim, one, patch, _ = state["patch_embed.proj.weight"].shape
    if one != 1:
        raise WeightsError(f"{source}: patch projection for {one} channels; a channel-agnostic model projects one")
    if input_size is None or int(input_size) % int(patch):
        raise ValueError(f"backbone.preprocess.input_size={input_size}: set the image size the model was trained "
                         f"at, a multiple of its patch size {int(patch)} (OpenPhenom: 256)")
    grid = int(input_size) // int(patch)
    tokens = state["pos_embed"].shape[1] - 1
    if tokens % (grid * grid):
        raise WeightsError(f"{source}: {tokens} position embeddings are not a whole number of {grid} x {grid} grids "
                           f"({input_size} px images): backbone.preprocess.input_size is not the model's image size")
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    return {"embed_dim": int(dim), "patch_size": int(patch), "depth": depth, "grid": grid,
            "max_channels": tokens // (grid * grid), "avg_pool": "fc_norm.weight" in state}


def encoder_state(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The encoder's keys (prefix removed); the decoder's set aside by name; nothing else allowed."""
    encoder = {k[len(ENCODER):]: v for k, v in state.items() if k.startswith(ENCODER)}
    other = sorted(k for k in state if not k.startswith(ENCODER) and not k.startswith(DECODER_PREFIXES))
    if other:
        raise WeightsError(f"{source}: unexpected keys outside the encoder ({ENCODER}*) and the MAE decoder "
                           f"{DECODER_PREFIXES}: {other[:10]} ({len(other)}). Is this OpenPhenom's model.safetensors?")
    return encoder


def build_model(sizes: dict[str, Any]) -> ChannelAgnosticEncoder:
    grid = sizes["grid"]
    vit = timm.create_model(
        "vit_small_patch16_224", pretrained=False, num_classes=0, in_chans=1, img_size=grid * sizes["patch_size"],
        patch_size=sizes["patch_size"], embed_dim=sizes["embed_dim"], depth=sizes["depth"],
        num_heads=max(1, sizes["embed_dim"] // HEAD_DIM), class_token=True, init_values=1e-4,
        block_fn=ParallelScalingBlock, qkv_bias=False, qk_norm=True, fc_norm=None,
        global_pool="avg" if sizes["avg_pool"] else "token")
    vit.patch_embed = ChannelAgnosticPatchEmbed(sizes["embed_dim"], sizes["patch_size"])
    vit.pos_embed = nn.Parameter(torch.zeros(1, 1 + sizes["max_channels"] * grid * grid, sizes["embed_dim"]),
                                 requires_grad=False)
    return ChannelAgnosticEncoder(vit, grid, sizes["max_channels"])


class ChannelAgnosticBackbone(Backbone):
    def __init__(self, model: ChannelAgnosticEncoder, *, name: str, in_channels: Sequence[str], features: str,
                 preprocess: dict[str, Any], sizes: dict[str, Any], source: str, file_sha256: str):
        super().__init__(model, name=name, arch="openphenom", in_channels=in_channels, features=features,
                         preprocess=preprocess, model_kwargs=sizes, weights_source=source, file_sha256=file_sha256)

    @property
    def embed_dim(self) -> int:
        width = self.model.num_features
        return width * len(self.in_channels) if self.features == "channelwise" else width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.model(self_standardise(x))[:, 1:]
        if self.features == "mean":
            return patches.mean(dim=1)
        return patches.reshape(len(x), x.shape[1], -1, patches.shape[-1]).mean(dim=2).flatten(1)


def build_channel_agnostic(name: str, in_channels: Sequence[str], weights: str | None, preprocess: dict[str, Any],
                           init: str = "weights", features: str = "mean", download: str = "auto",
                           trust_checkpoint: bool = False) -> ChannelAgnosticBackbone:
    """OpenPhenom from its released file, for the dataset's channels (`in_channels`, any number up
    to the model's maximum)."""
    from xferlab.backbones.checkpoints import released_file

    if features not in FEATURES:
        raise ValueError(f"backbone.features={features!r} for {name}; choose one of {FEATURES}")
    loaded, source = released_file(name, weights, init, download, trust_checkpoint, "OpenPhenom")
    state = encoder_state(loaded.state, source)
    sizes = architecture(state, preprocess.get("input_size"), source)
    if len(in_channels) > sizes["max_channels"]:
        raise WeightsError(f"{source} embeds at most {sizes['max_channels']} channels; backbone.in_channels="
                           f"{list(in_channels)} names {len(in_channels)}")
    model = build_model(sizes)
    load_strict(model.vit_backbone, state, source)
    log.info("backbone %s (OpenPhenom): weights %s, sha256 %s", name, source, loaded.file_sha256[:16])
    return ChannelAgnosticBackbone(model, name=name, in_channels=in_channels, features=features,
                                   preprocess=preprocess, sizes=sizes, source=source, file_sha256=loaded.file_sha256)
