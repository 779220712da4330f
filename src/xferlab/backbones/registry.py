"""Build a backbone from its config: a timm model (random or from a weights file) or raw pixels."""

from __future__ import annotations

import logging
from typing import Any, Sequence

import timm
import torch
import torch.nn.functional as F
from torch import nn

from xferlab.backbones.weights import WeightsError, load_strict, read_state_dict, state_dict_sha256

log = logging.getLogger(__name__)

FEATURES = ("cls", "cls_avg")


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
        self.weights_sha256 = state_dict_sha256(model)
        self.requires_grad_(False)
        self.eval()

    @property
    def embed_dim(self) -> int:
        base = int(self.model.num_features)
        return 2 * base if self.features == "cls_avg" else base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.model, PixelFeatures):
            return self.model(x)
        tokens = self.model.forward_features(x)
        cls = tokens[:, 0]
        if self.features == "cls":
            return cls
        patches = tokens[:, getattr(self.model, "num_prefix_tokens", 1) :]
        return torch.cat([cls, patches.mean(dim=1)], dim=1)

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
) -> Backbone:
    """Build the backbone a config names.

    `init` says where the weights come from, explicitly: `random` (seeded by `init_seed`, the
    control), `weights` (the file at `weights`, loaded strictly), or `none` (a model without
    parameters, such as `pixels`). There is no fallback from one to another.
    """
    model_kwargs = dict(model_kwargs or {})
    in_channels = list(in_channels)
    if arch == "pixels":
        model: nn.Module = PixelFeatures(len(in_channels), int(model_kwargs.get("grid", 16)))
        source = "none (raw pixels)"
    else:
        if init not in ("random", "weights"):
            raise ValueError(f"backbone.init={init!r}; choose 'random' or 'weights' for a timm model")
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(init_seed))
                model = timm.create_model(
                    arch, pretrained=False, num_classes=0, in_chans=len(in_channels), **model_kwargs
                )
        except RuntimeError as err:
            if "Unknown model" in str(err):
                raise ValueError(f"backbone.arch={arch!r} is not a timm model name ({err})") from err
            raise
        if init == "random":
            if weights:
                raise ValueError(
                    f"backbone.init=random but backbone.weights={weights} is set; "
                    "use backbone.init=weights to load the file"
                )
            source = f"random (init_seed={init_seed})"
        else:
            if not weights:
                raise WeightsError(
                    f"backbone {name!r} needs a weights file: set backbone.weights=/path/to/file "
                    "(.pth or .safetensors), or use backbone=random for a randomly initialised control"
                )
            load_strict(model, read_state_dict(weights), str(weights))
            source = str(weights)
    backbone = Backbone(
        model, name=name, arch=arch, in_channels=in_channels, features=features,
        preprocess=preprocess, model_kwargs=model_kwargs, weights_source=source,
    )
    log.info("backbone %s (%s): weights %s, sha256 %s", name, arch, source, backbone.weights_sha256[:16])
    return backbone
