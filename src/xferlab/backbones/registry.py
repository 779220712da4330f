"""Build a backbone from its config: a timm model (random or from a weights file) or raw pixels."""

from __future__ import annotations

import logging
from typing import Any, Sequence

import timm
import torch
import torch.nn.functional as F
from torch import nn

from xferlab.backbones.architecture import check_against_config, vit_kwargs_from_state
from xferlab.backbones.checkpoints import load_backbone_state
from xferlab.backbones.locations import resolve_weights
from xferlab.backbones.weights import WeightsError, file_sha256, load_strict, state_dict_sha256

log = logging.getLogger(__name__)

FEATURES = ("cls", "cls_avg", "last4")


class PixelFeatures(nn.Module):
    """Raw pixels average-pooled to `grid x grid` per channel: the no-learning baseline."""

    def __init__(self, in_chans: int, grid: int):
        super().__init__()
        self.grid = grid
        self.num_features = in_chans * grid * grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, self.grid).flatten(1)


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
    ):
        super().__init__()
        if features not in FEATURES:
            raise ValueError(f"backbone.features={features!r}; choose one of {FEATURES}")
        self.model = model
        self.name = name
        self.arch = arch
        self.in_channels = list(in_channels)
        self.features = features
        self.preprocess = dict(preprocess)
        self.model_kwargs = dict(model_kwargs or {})
        self.weights_source = weights_source
        self.file_sha256 = file_sha256  # of the weights file, when the weights came from one
        self.pretraining: dict[str, Any] = {}  # what xferlab's pretraining recorded in the checkpoint (e.g. `seen`)
        self.weights_sha256 = state_dict_sha256(model)
        self.requires_grad_(False)
        self.eval()

    @property
    def embed_dim(self) -> int:
        base = int(self.model.num_features)
        return {"cls": 1, "cls_avg": 2, "last4": 4}[self.features] * base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.model, PixelFeatures):
            return self.model(x)
        if self.features == "last4":
            return self._last4(x)
        tokens = self.model.forward_features(x)
        cls = tokens[:, 0]
        if self.features == "cls":
            return cls
        patches = tokens[:, getattr(self.model, "num_prefix_tokens", 1) :]
        return torch.cat([cls, patches.mean(dim=1)], dim=1)

    def _last4(self, x: torch.Tensor) -> torch.Tensor:
        """CLS tokens of the last four blocks, each after the final norm, concatenated (DINO's
        linear-evaluation features)."""
        m = self.model
        x = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))
        outs = []
        for i, block in enumerate(m.blocks):
            x = block(x)
            if i >= len(m.blocks) - 4:
                outs.append(m.norm(x)[:, 0])
        if len(outs) < 4:
            raise ValueError(f"backbone.features=last4 needs at least 4 blocks; {self.arch} has {len(m.blocks)}")
        return torch.cat(outs, dim=1)

    def current_sha256(self) -> str:
        """Digest of the weights now (equals `weights_sha256` as long as nothing changed them)."""
        return state_dict_sha256(self.model)

    def identity(self) -> dict[str, Any]:
        """Everything about the backbone that determines its embeddings (part of the cache key)."""
        return {
            "arch": self.arch,
            "model_kwargs": self.model_kwargs,
            "in_channels": self.in_channels,
            "features": self.features,
            "weights_sha256": self.weights_sha256,
        }



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
) -> Backbone:
    """Build the backbone a config names.

    `init` says where the weights come from, explicitly: `random` (seeded by `init_seed`, the
    control), `weights` (the file `weights` names, loaded strictly; for ViTs the architecture is
    read from its tensor shapes and checked against the config), `hub` (timm's copy on the Hugging
    Face hub, `hub_id`, downloaded only when online and loaded strictly), or `none` (a model without
    parameters, such as `pixels`). There is no fallback from one to another.
    """
    model_kwargs = dict(model_kwargs or {})
    in_channels = list(in_channels)
    file_digest = None
    if arch == "pixels":
        model: nn.Module = PixelFeatures(len(in_channels), int(model_kwargs.get("grid", 16)))
        source = "none (raw pixels)"
    elif init == "random":
        if weights:
            raise ValueError(f"backbone.init=random but backbone.weights={weights} is set; "
                             "use backbone.init=weights to load the file")
        model = _create(arch, len(in_channels), model_kwargs, seed=init_seed)
        source = f"random (init_seed={init_seed})"
    elif init in ("weights", "hub"):
        if init == "weights":
            path = resolve_weights(weights, name)
            loaded = load_backbone_state(path, checkpoint_key=checkpoint_key, trust=trust_checkpoint)
            state, source, file_digest = loaded.state, f"{path} ({loaded.format})", loaded.file_sha256
        else:
            path, state = hub_state(hub_id, name)
            source, file_digest = f"hub {hub_id} ({path})", file_sha256(path)
        if "patch_embed.proj.weight" in state:
            found = vit_kwargs_from_state(state)
            configured = {**model_kwargs, "in_chans": len(in_channels)}
            check_against_config({k: v for k, v in found.items() if k != "num_heads"}, configured, str(source))
            model_kwargs = {**found, **{k: v for k, v in model_kwargs.items() if k == "num_heads"}}
            if preprocess.get("input_size") not in (None, found.get("img_size")):
                model_kwargs["dynamic_img_size"] = True
            model = _create(arch, model_kwargs.pop("in_chans"), model_kwargs, seed=0)
            model_kwargs["in_chans"] = len(in_channels)
        else:
            model = _create(arch, len(in_channels), model_kwargs, seed=0)
        load_strict(model, state, str(source))
    else:
        raise ValueError(f"backbone.init={init!r}; choose 'random', 'weights', 'hub' or 'none' (pixels)")
    backbone = Backbone(
        model, name=name, arch=arch, in_channels=in_channels, features=features,
        preprocess=preprocess, model_kwargs=model_kwargs, weights_source=source, file_sha256=file_digest,
    )
    if init == "weights":
        backbone.pretraining = dict(loaded.meta.get("xferlab") or {})
    log.info("backbone %s (%s): weights %s, weights sha256 %s%s", name, arch, source, backbone.weights_sha256[:16],
             f", file sha256 {file_digest[:16]}" if file_digest else "")
    return backbone


def _create(arch: str, in_chans: int, model_kwargs: dict[str, Any], seed: int) -> nn.Module:
    """A timm model with no classifier, initialised from `seed`; never with timm's own pretrained
    loading (which is non-strict when `num_classes=0`)."""
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
