"""OpenPhenom (Recursion's CA-MAE ViT-S/16; Kraus et al., CVPR 2024): a channel-agnostic masked
autoencoder. Every channel is cut into 16 px patches by one shared single-channel projection, so a
`C`-channel image becomes `C x 256` patch tokens (channel-major) plus a class token; fixed 2D sin-cos
position embeddings, one grid repeated per channel up to the model's maximum number of channels
(`max_in_chans`, 11 in maes_microscopy's Hugging Face config), are added to the first `1 + C x 256`
tokens. Any number of channels up to that maximum embeds without empty slots or replicated
channels. (The grids being the same for every channel, the `mean` embedding does not depend on the
channels' order; `channelwise` follows it.)

The released file (`model.safetensors` of the Hugging Face repository recursionpharma/OpenPhenom)
is what the publisher's `MAEModel.save_pretrained` writes (maes_microscopy `huggingface_mae.py`):
`torch.save({"state_dict": model.state_dict()})`, a torch zip under a safetensors name
(`checkpoints.read_file` recognises it by content). It holds the whole autoencoder: the encoder
under `encoder.vit_backbone.` and the reconstruction decoder (`decoder.`, `encoder_decoder_proj.`,
`decoder_pred.`). The encoder loads strictly into xferlab's own module (`channel_agnostic_vit`,
blocks in `parallel_block`), which computes what the publisher's timm (0.9.7) computes, not what the
installed timm would; the decoder's keys are set aside by those names (anything else unexpected is
an error).

Embedded as the Hugging Face repository's `MAEModel.predict` does: `input_norm` (its `Normalizer`,
`pixels.float() / 255` for any dtype, then `LazyInstanceNorm2d(affine=False,
track_running_stats=False)`: each image and channel self-standardised, eps 1e-5), the encoder's
token features (`vit_backbone.forward_features`), and the mean of the patch tokens (`features:
mean`, 384 dims) or one mean per channel, concatenated (`features: channelwise`, 384 x C).
(`predict` is in the Hugging Face repository's `huggingface_mae.py`, not in maes_microscopy's, whose
`MAEModel` has none; the Hugging Face repository could not be read here. Its steps are taken from
the issue's reading of it, which third-party copies of that file agree with.)

The division by 255 is `backbone.preprocess.intensity: by255` (integer pixels of any dtype / 255,
as the `Normalizer` would do with the same array); the instance norm is here. Camera counts
(uint16) are therefore divided by 255, not stretched: the instance norm then standardises the
counts themselves, and its eps of 1e-5 on counts / 255 is 0.65 counts^2 of variance, negligible
for any image with signal. 8-bit images are exactly the publisher's input.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from xferlab.backbones.channel_agnostic_vit import ChannelAgnosticViT
from xferlab.backbones.registry import Backbone
from xferlab.backbones.weights import WeightsError, load_strict

log = logging.getLogger(__name__)

ENCODER = "encoder.vit_backbone."
DECODER_PREFIXES = ("decoder.", "encoder_decoder_proj.", "decoder_pred.")
FEATURES = ("mean", "channelwise")
ARITHMETIC = "maes_microscopy (timm 0.9.7 ParallelScalingBlock)"  # in the cache key: how the blocks compute


def self_standardise(x: torch.Tensor) -> torch.Tensor:
    """Each image and channel to zero mean and unit variance: `LazyInstanceNorm2d(affine=False,
    track_running_stats=False)`, i.e. instance norm with the batch's own statistics, eps 1e-5."""
    return F.instance_norm(x, eps=1e-5)


def architecture(state: dict[str, torch.Tensor], input_size: int | None, source: str) -> dict[str, Any]:
    """The encoder's sizes from its tensors (width, depth, heads from the QK norm's width, MLP width);
    the position grid from the image size it takes (`backbone.preprocess.input_size`), the maximum
    number of channels from the rest."""
    needed = ("patch_embed.proj.weight", "pos_embed", "cls_token", "blocks.0.in_proj.weight",
              "blocks.0.q_norm.weight", "blocks.0.mlp_out_proj.weight")
    absent = [ENCODER + k for k in needed if k not in state]
    if absent:
        raise WeightsError(f"{source} is not an OpenPhenom (CA-MAE) file: no {absent}")
    dim, one, patch, _ = state["patch_embed.proj.weight"].shape
    if one != 1:
        raise WeightsError(f"{source}: patch projection for {one} channels; a channel-agnostic model projects one")
    head_dim = state["blocks.0.q_norm.weight"].shape[0]
    if int(dim) % int(head_dim):
        raise WeightsError(f"{source}: width {int(dim)} is not a whole number of {int(head_dim)}-wide heads")
    if input_size is None or int(input_size) % int(patch):
        raise ValueError(f"backbone.preprocess.input_size={input_size}: set the image size the model was trained "
                         f"at, a multiple of its patch size {int(patch)} (OpenPhenom: 256)")
    grid = int(input_size) // int(patch)
    tokens = state["pos_embed"].shape[1] - 1
    if tokens % (grid * grid):
        raise WeightsError(f"{source}: {tokens} position embeddings are not a whole number of {grid} x {grid} grids "
                           f"({input_size} px images): backbone.preprocess.input_size is not the model's image size")
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    return {"embed_dim": int(dim), "patch_size": int(patch), "depth": depth, "heads": int(dim) // int(head_dim),
            "mlp_hidden": int(state["blocks.0.mlp_out_proj.weight"].shape[1]), "grid": grid,
            "max_channels": tokens // (grid * grid), "avg_pool": "fc_norm.weight" in state, "arithmetic": ARITHMETIC}


def encoder_state(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The encoder's keys (prefix removed); the decoder's set aside by name; nothing else allowed."""
    encoder = {k[len(ENCODER):]: v for k, v in state.items() if k.startswith(ENCODER)}
    other = sorted(k for k in state if not k.startswith(ENCODER) and not k.startswith(DECODER_PREFIXES))
    if other:
        raise WeightsError(f"{source}: unexpected keys outside the encoder ({ENCODER}*) and the MAE decoder "
                           f"{DECODER_PREFIXES}: {other[:10]} ({len(other)}). Is this OpenPhenom's model.safetensors?")
    return encoder


def build_model(sizes: dict[str, Any]) -> ChannelAgnosticViT:
    return ChannelAgnosticViT(sizes["embed_dim"], sizes["depth"], sizes["heads"], sizes["mlp_hidden"],
                              sizes["patch_size"], sizes["grid"], sizes["max_channels"], sizes["avg_pool"])


class ChannelAgnosticBackbone(Backbone):
    def __init__(self, model: ChannelAgnosticViT, *, name: str, in_channels: Sequence[str], features: str,
                 preprocess: dict[str, Any], sizes: dict[str, Any], source: str, file_sha256: str):
        super().__init__(model, name=name, arch="openphenom", in_channels=in_channels, features=features,
                         preprocess=preprocess, model_kwargs=sizes, weights_source=source, file_sha256=file_sha256)

    @property
    def embed_dim(self) -> int:
        width = self.model.num_features
        return width * len(self.in_channels) if self.features == "channelwise" else width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`predict`'s embedding of images already divided by 255 (`intensity: by255`)."""
        patches = self.model.forward_features(self_standardise(x))[:, 1:]
        if self.features == "mean":
            return patches.mean(dim=1)
        return patches.reshape(len(x), x.shape[1], -1, patches.shape[-1]).mean(dim=2).flatten(1)


def with_dataset_channels(backbone: DictConfig, dataset_channels: Sequence[str]) -> DictConfig:
    """The backbone's config for a dataset: a channel-agnostic backbone with `take_dataset_channels:
    true` gets every channel of the dataset as its inputs (`in_channels`, in the dataset's order), and
    its `preprocess.mean` / `std` one value per channel (they must then hold one value for all);
    any other config is returned as it is."""
    if not backbone.get("take_dataset_channels", False) or list(backbone.in_channels) == list(dataset_channels):
        return backbone
    fitted = OmegaConf.to_container(backbone, resolve=True)
    n = len(dataset_channels)
    for key in ("mean", "std"):
        values = fitted["preprocess"].get(key)
        if values is not None and len(set(values)) > 1:
            raise ValueError(
                f"backbone={backbone.name} takes the dataset's {n} channels {list(dataset_channels)}, but "
                f"backbone.preprocess.{key}={list(values)} differs per channel: give one value per dataset channel "
                f"(backbone.preprocess.{key}=[...]) or backbone.take_dataset_channels=false")
        if values is not None:
            fitted["preprocess"][key] = [values[0]] * n
    fitted["in_channels"] = list(dataset_channels)
    return OmegaConf.create(fitted)


def build_channel_agnostic(name: str, in_channels: Sequence[str], weights: str | None, preprocess: dict[str, Any],
                           init: str = "weights", features: str = "mean", download: str = "auto",
                           trust_checkpoint: bool = False, take_dataset_channels: bool = False,
                           ) -> ChannelAgnosticBackbone:
    """OpenPhenom from its released file, for the channels `in_channels` (any number up to the
    model's maximum; with `take_dataset_channels` the job sets them to the dataset's:
    `with_dataset_channels`)."""
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
    load_strict(model, state, source)
    log.info("backbone %s (OpenPhenom): weights %s, sha256 %s", name, source, loaded.file_sha256[:16])
    return ChannelAgnosticBackbone(model, name=name, in_channels=in_channels, features=features,
                                   preprocess=preprocess, sizes=sizes, source=source, file_sha256=loaded.file_sha256)
