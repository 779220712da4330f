"""Preprocessing between the image store and the backbone: resize, normalise, map channels."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

NORMALIZATIONS = ("zscore", "dataset", "backbone")
EPS = 1e-6


def check_unit_range(store) -> None:
    """`normalize=backbone` reads float pixels as intensities in [0, 1]. A float store whose
    per-channel mean and std are impossible for values in [0, 1] (mean outside [0, 1], or variance
    above mean * (1 - mean), the most values in [0, 1] can have) is refused: its pixels would reach
    the backbone unscaled."""
    for name, mean, std in zip(store.channel_names, store.channel_mean, store.channel_std):
        if not (-1e-6 <= mean <= 1 + 1e-6) or std**2 > mean * (1 - mean) + 1e-6:
            raise ValueError(
                f"backbone.preprocess.normalize=backbone expects float pixels in [0, 1], but {store.path} holds "
                f"{np.dtype(store.images.dtype)} pixels outside that range (channel {name!r}: mean {mean:.4g}, std "
                f"{std:.4g}). Use backbone.preprocess.normalize=zscore (per image) or dataset (store statistics), "
                "or store the pixels scaled to [0, 1] (or as integers, which are scaled by their dtype's range)."
            )


class Preprocessor:
    """Raw store images `(B, C, H, W)` (any dtype) -> backbone input `(B, K, S, S)` float32.

    - `zscore`: each image and channel to zero mean, unit variance (a constant channel becomes 0);
    - `dataset`: each channel by the store's per-channel mean and std;
    - `backbone`: intensities scaled to [0, 1] by the dtype's range, then the backbone's own
      per-slot `mean` / `std` after channel mapping (e.g. ImageNet statistics).
    The first two act on dataset channels before mapping, so an empty slot holds the mean (0).
    """

    def __init__(
        self,
        input_size: int | None,
        normalize: str,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        dataset_mean: Sequence[float] | None = None,
        dataset_std: Sequence[float] | None = None,
        dtype_max: float | None = None,
    ):
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"backbone.preprocess.normalize={normalize!r}; choose one of {NORMALIZATIONS}")
        if normalize == "backbone" and (mean is None or std is None):
            raise ValueError("normalize=backbone needs backbone.preprocess.mean and .std")
        self.input_size = None if input_size is None else int(input_size)
        self.normalize = normalize
        self.mean = None if mean is None else [float(v) for v in mean]
        self.std = None if std is None else [float(v) for v in std]
        self.dataset_mean = None if dataset_mean is None else [float(v) for v in dataset_mean]
        self.dataset_std = None if dataset_std is None else [float(v) for v in dataset_std]
        self.dtype_max = dtype_max

    @classmethod
    def for_store(cls, config: dict[str, Any], store) -> "Preprocessor":
        dtype = np.dtype(store.images.dtype)
        dtype_max = float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0
        if config.get("normalize", "zscore") == "backbone" and dtype.kind == "f":
            check_unit_range(store)
        return cls(
            config.get("input_size"),
            config.get("normalize", "zscore"),
            mean=config.get("mean"),
            std=config.get("std"),
            dataset_mean=store.channel_mean.tolist(),
            dataset_std=store.channel_std.tolist(),
            dtype_max=dtype_max,
        )

    def __call__(self, images: torch.Tensor, adapter: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """One backbone input per image (the adapter's single view)."""
        (view,) = self.views(images, lambda x: [adapter(x)])
        return view

    def views(self, images: torch.Tensor, make_views: Callable[[torch.Tensor], list[torch.Tensor]]) -> list[torch.Tensor]:
        """The backbone inputs for a batch: resize and normalise, then map channels into one or
        more views (see `ChannelAdapter.views`), then the backbone's own normalisation."""
        x = images.float()
        if self.input_size is not None and x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              antialias=True, align_corners=False)
        if self.normalize == "zscore":
            mu = x.mean(dim=(2, 3), keepdim=True)
            sd = x.std(dim=(2, 3), keepdim=True, unbiased=False)
            x = (x - mu) / (sd + EPS)
        elif self.normalize == "dataset":
            mu = torch.tensor(self.dataset_mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            sd = torch.tensor(self.dataset_std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            x = (x - mu) / (sd + EPS)
        else:
            x = x / self.dtype_max
        views = make_views(x)
        if self.normalize == "backbone":
            out = []
            for v in views:
                if len(self.mean) != v.shape[1]:
                    raise ValueError(f"backbone mean/std have {len(self.mean)} values for {v.shape[1]} input slots")
                mu = torch.tensor(self.mean, dtype=v.dtype, device=v.device).view(1, -1, 1, 1)
                sd = torch.tensor(self.std, dtype=v.dtype, device=v.device).view(1, -1, 1, 1)
                out.append((v - mu) / sd)
            views = out
        return views

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"input_size": self.input_size, "normalize": self.normalize}
        if self.normalize == "backbone":
            out.update(mean=self.mean, std=self.std, dtype_max=self.dtype_max)
        if self.normalize == "dataset":
            out.update(dataset_mean=self.dataset_mean, dataset_std=self.dataset_std)
        return out
