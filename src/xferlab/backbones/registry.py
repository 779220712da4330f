"""Build a backbone from its config: a timm model whose weights come from one of the weight
sources in `WEIGHT_SOURCES` (random, a file, the hub), pooled by `backbone.features`
(`backbones.pooling`). The raw-pixel baseline is its own class (`backbones.pixels`)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import timm
import torch
from torch import nn

from xferlab.backbones.architecture import check_against_config, vit_kwargs_from_state
from xferlab.backbones.checkpoints import load_backbone_state
from xferlab.backbones.resolve import resolve_weights
from xferlab.backbones.pooling import get_pooling
from xferlab.backbones.positions import (GridResize, check_rope_periods, grid_resize_rule, resample_pos_embed,
                                         set_rope_periods)
from xferlab.backbones.weights import WeightsError, file_sha256, load_strict, state_dict_sha256

log = logging.getLogger(__name__)

class Backbone(nn.Module):
    """A frozen feature extractor: images `(B, K, S, S)` in its input slots -> embeddings `(B, D)`."""

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        arch: str,
        in_channels: Sequence[str],
        features: str,
        preprocess: dict[str, Any],
        model_kwargs: dict[str, Any] | None = None,
        weights_source: str,
        file_sha256: str | None = None,
        positions: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.model = model
        self.name = name
        self.arch = arch
        self.in_channels = list(in_channels)
        self.features = features
        self.preprocess = dict(preprocess)
        self.model_kwargs = dict(model_kwargs or {})
        self.weights_source = weights_source
        self.file_sha256 = file_sha256  # of the weights file, when the weights came from one
        # the publisher's position rules that changed the model (`backbones.positions`); None: timm's own
        self.positions = dict(positions) if positions else None
        self.pretraining: dict[str, Any] = {}  # what xferlab's pretraining recorded in the checkpoint (e.g. `seen`)
        self.weights_sha256 = state_dict_sha256(model)
        self.requires_grad_(False)
        self.eval()

    @property
    def embed_dim(self) -> int:
        return get_pooling(self.features).width * int(self.model.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return get_pooling(self.features).fn(self.model, x)

    def current_sha256(self) -> str:
        """Digest of the weights now (equals `weights_sha256` as long as nothing changed them)."""
        return state_dict_sha256(self.model)

    def identity(self) -> dict[str, Any]:
        """Everything about the backbone that determines its embeddings (part of the cache key).
        `positions` enters only when a publisher's rule changed the model (the RoPE periods are no part of
        the state dict, so not of `weights_sha256`); the keys of backbones without it stay as they were."""
        identity = {
            "arch": self.arch,
            "model_kwargs": self.model_kwargs,
            "in_channels": self.in_channels,
            "features": self.features,
            "weights_sha256": self.weights_sha256,
        }
        if self.positions:
            identity["positions"] = self.positions
        return identity



@dataclass(frozen=True)
class WeightsRequest:
    """What a weight source needs to know: the backbone's name (for messages), architecture and
    input slots, and the config keys of the source that reads them."""

    name: str
    arch: str
    in_channels: list[str]
    model_kwargs: dict[str, Any]
    input_size: int | None
    weights: str | None
    init_seed: int
    checkpoint_key: str
    trust_checkpoint: bool
    hub_id: str | None
    download: str = "auto"
    pos_embed_resize: GridResize | None = None  # None: timm's rule, at every forward (dynamic_img_size)


@dataclass
class Loaded:
    model: nn.Module
    model_kwargs: dict[str, Any]
    source: str  # where the weights came from, in words
    file_sha256: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # what the checkpoint says about itself (epoch, xferlab, ...)
    positions: dict[str, Any] = field(default_factory=dict)  # publisher's position rules applied while loading


def random_weights(req: WeightsRequest) -> Loaded:
    """`init=random`: the control, initialised from `init_seed`."""
    if req.weights:
        raise ValueError(f"backbone.init=random but backbone.weights={req.weights} is set; "
                         "use backbone.init=weights to load the file")
    model = create_model(req.arch, len(req.in_channels), req.model_kwargs, seed=req.init_seed)
    return Loaded(model, req.model_kwargs, f"random (init_seed={req.init_seed})")


def file_weights(req: WeightsRequest) -> Loaded:
    """`init=weights`: the file `backbone.weights` names, in any format `backbones.checkpoints` reads."""
    path = resolve_weights(req.weights, req.name, req.download)
    loaded = load_backbone_state(path, checkpoint_key=req.checkpoint_key, trust=req.trust_checkpoint)
    result = model_from_state(req, loaded.state, f"{path} ({loaded.format})", loaded.file_sha256)
    result.meta = loaded.meta
    return result


def hub_weights(req: WeightsRequest) -> Loaded:
    """`init=hub`: timm's copy on the Hugging Face hub (`hub_id`), downloaded only when online."""
    path, state = hub_state(req.hub_id, req.name)
    return model_from_state(req, state, f"hub {req.hub_id} ({path})", file_sha256(path))


WEIGHT_SOURCES: dict[str, Callable[[WeightsRequest], Loaded]] = {
    "random": random_weights, "weights": file_weights, "hub": hub_weights}


def model_from_state(req: WeightsRequest, state: dict[str, torch.Tensor], source: str, digest: str | None) -> Loaded:
    """A model built for `state` and loaded strictly. For ViTs the architecture is read from the
    tensor shapes and checked against the config (a mismatch is an error, not a resize). An input
    size whose patch grid is not the file's: with `pos_embed_resize` the file's position grid is
    resized once, here, by the publisher's rule and the model built for the input size; without it,
    timm resizes at every forward by its own rule (`dynamic_img_size`)."""
    model_kwargs, positions = dict(req.model_kwargs), {}
    if "patch_embed.proj.weight" in state:
        found = vit_kwargs_from_state(state)
        configured = {**model_kwargs, "in_chans": len(req.in_channels)}
        check_against_config({k: v for k, v in found.items() if k != "num_heads"}, configured, source)
        model_kwargs = {**found, **{k: v for k, v in model_kwargs.items() if k == "num_heads"}}
        if req.input_size not in (None, found.get("img_size")):
            if req.pos_embed_resize is not None and "pos_embed" in state:
                check_patch_grid(found["patch_size"], req.input_size, req.name)
                grid = int(req.input_size) // found["patch_size"]
                state = {**state, "pos_embed": resized_positions(state["pos_embed"], grid, req.pos_embed_resize)}
                model_kwargs["img_size"] = int(req.input_size)
                positions["pos_embed_resize"] = req.pos_embed_resize.describe()
            else:
                model_kwargs["dynamic_img_size"] = True
        model = create_model(req.arch, model_kwargs.pop("in_chans"), model_kwargs, seed=0)
        model_kwargs["in_chans"] = len(req.in_channels)
    else:
        model = create_model(req.arch, len(req.in_channels), model_kwargs, seed=0)
    load_strict(model, state, source)
    return Loaded(model, model_kwargs, source, digest, positions=positions)


def resized_positions(pos_embed: torch.Tensor, grid: int, rule: GridResize) -> torch.Tensor:
    """A file's position table at another square grid. timm's files keep the class position in front
    (DINO, DINOv2; `1 + M*M` rows) or folded into `cls_token` (DINOv2 with registers, `no_embed_class`;
    `M*M` rows): the rows beyond the square are the prefix, kept as they are."""
    prefix = pos_embed.shape[1] - math.isqrt(pos_embed.shape[1]) ** 2
    return resample_pos_embed(pos_embed, prefix, grid, rule)


def build_backbone(
    name: str,
    arch: str,
    in_channels: Sequence[str],
    init: str,
    preprocess: dict[str, Any],
    model_kwargs: dict[str, Any] | None = None,
    weights: str | None = None,
    init_seed: int = 0,
    features: str = "cls",
    checkpoint_key: str = "teacher",
    trust_checkpoint: bool = False,
    hub_id: str | None = None,
    download: str = "auto",
    pretrain_seed: int | None = None,
    pos_embed_resize: dict[str, Any] | None = None,
    rope_periods: str | None = None,
    required_channels: Sequence[str] | None = None,
) -> Backbone:
    """Build the backbone a config names. `init` says where the weights come from, explicitly,
    as a key of `WEIGHT_SOURCES`: `random` (seeded by `init_seed`, the control), `weights` (the
    file `weights` names, loaded strictly), `hub` (timm's copy on the Hugging Face hub, `hub_id`).
    There is no fallback from one to another. `download: auto` fetches a missing public checkpoint
    into the weights folder first (online only; `never`: not). `pretrain_seed` names which of a
    source's pretraining replicates this is (the shipped backbones' file names use it; `random` ties
    its `init_seed` to it): runs record it, and the report treats it as a replicate, not a condition.
    `required_channels` (the input slots the dataset must fill) is for the check before the jobs
    (`checks.channels.channel_problem`), not the model.
    `pos_embed_resize` and `rope_periods` compute positions as the weights' publisher does
    (`backbones.positions`); null: timm's rules."""
    get_pooling(features)  # a bad value fails before any weights are read
    resize_rule = grid_resize_rule(pos_embed_resize)
    check_rope_periods(rope_periods)
    if init not in WEIGHT_SOURCES:
        raise ValueError(f"backbone.init={init!r}; choose one of {tuple(WEIGHT_SOURCES)} "
                         "(backbone=pixels is the baseline without weights)")
    request = WeightsRequest(name=name, arch=arch, in_channels=list(in_channels),
                             model_kwargs=dict(model_kwargs or {}), input_size=preprocess.get("input_size"),
                             weights=weights, init_seed=int(init_seed), checkpoint_key=checkpoint_key,
                             trust_checkpoint=bool(trust_checkpoint), hub_id=hub_id, download=download,
                             pos_embed_resize=resize_rule)
    loaded = WEIGHT_SOURCES[init](request)
    positions = dict(loaded.positions)  # the grid resize, where the file's grid was resized
    if rope_periods is not None:
        set_rope_periods(loaded.model, rope_periods, name)
        positions["rope_periods"] = rope_periods
    check_patch_grid(getattr(getattr(loaded.model, "patch_embed", None), "patch_size", None),
                     preprocess.get("input_size"), name)
    backbone = Backbone(
        loaded.model, name=name, arch=arch, in_channels=in_channels, features=features, preprocess=preprocess,
        model_kwargs=loaded.model_kwargs, weights_source=loaded.source, file_sha256=loaded.file_sha256,
        positions=positions,
    )
    backbone.pretraining = dict(loaded.meta.get("xferlab") or {})
    backbone.pretrain_seed = None if pretrain_seed is None else int(pretrain_seed)
    log.info("backbone %s (%s): weights %s, weights sha256 %s%s", name, arch, loaded.source,
             backbone.weights_sha256[:16], f", file sha256 {loaded.file_sha256[:16]}" if loaded.file_sha256 else "")
    return backbone


def check_patch_grid(patch: int | Sequence[int] | None, input_size: int | None, name: str) -> None:
    """A ViT sees whole patches: an input size that is not a multiple of the patch size would
    silently drop the image's last rows and columns."""
    if input_size is None or patch is None:
        return
    patch = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
    if int(input_size) % patch:
        fits = ", ".join(str(patch * k) for k in (int(input_size) // patch, int(input_size) // patch + 1) if k)
        raise ValueError(f"backbone={name}: backbone.preprocess.input_size={input_size} is not a multiple of its "
                         f"patch size {patch}; use e.g. {fits}")


def create_model(arch: str, in_chans: int, model_kwargs: dict[str, Any], seed: int) -> nn.Module:
    """A timm model with no classifier, initialised from `seed`; never with timm's own pretrained
    loading (which is non-strict when `num_classes=0`). Evaluation and pretraining both build
    their models here."""
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return timm.create_model(arch, pretrained=False, num_classes=0, in_chans=in_chans, **model_kwargs)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise ValueError(f"backbone.arch={arch!r} is not a timm model name ({err})") from err
        raise


def hub_state(hub_id: str | None, name: str):
    """Download (online only) and read timm's safetensors weights for `hub_id`."""
    if not hub_id:
        raise WeightsError(f"backbone={name} with init=hub needs backbone.hub_id (e.g. vit_small_patch16_224.dino)")
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(repo_id=f"timm/{hub_id}", filename="model.safetensors")
    except Exception as err:  # noqa: BLE001 - offline or missing: one clear error, no retries
        raise WeightsError(
            f"backbone={name}: timm/{hub_id} is not in the local Hugging Face cache and cannot be downloaded "
            f"({type(err).__name__}). Run once online with HF_HUB_OFFLINE=0, or download the weights file and "
            "use backbone.init=weights backbone.weights=/path/to/file"
        ) from err
    from safetensors.torch import load_file

    return path, load_file(path)
