"""Multi-crop augmentations for fluorescence images with any number of channels, on tensors:
random resized crop, flips, 90-degree rotations, per-channel intensity scaling, noise, blur and
channel drop-out. Nothing mixes channels (no colour jitter)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class CropSpec:
    size: int
    scale: tuple[float, float]


def random_resized_crop(x: torch.Tensor, spec: CropSpec, g: torch.Generator) -> torch.Tensor:
    """`(C, H, W)` -> `(C, size, size)` from a random box of area fraction in `spec.scale` and
    aspect ratio in [3/4, 4/3]."""
    _, h, w = x.shape
    area = h * w * float(torch.empty(1).uniform_(*spec.scale, generator=g))
    ratio = math.exp(float(torch.empty(1).uniform_(math.log(3 / 4), math.log(4 / 3), generator=g)))
    ch = max(1, min(h, int(round(math.sqrt(area / ratio)))))
    cw = max(1, min(w, int(round(math.sqrt(area * ratio)))))
    top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
    left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
    crop = x[:, top : top + ch, left : left + cw]
    return F.interpolate(crop[None], size=(spec.size, spec.size), mode="bilinear", antialias=True,
                         align_corners=False)[0]


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(round(2 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[0]
    x = F.conv2d(F.pad(x[None], (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x[0]


@dataclass
class Augment:
    """One view: crop, then photometric changes applied per channel. Input is z-scored."""

    crop: CropSpec
    flip: bool = True
    rotate: bool = True
    intensity: tuple[float, float] = (0.7, 1.3)
    noise: float = 0.1
    blur_prob: float = 0.3
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    channel_dropout: float = 0.1

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        x = random_resized_crop(x, self.crop, g)
        if self.flip and torch.rand(1, generator=g) < 0.5:
            x = x.flip(-1)
        if self.rotate:
            x = torch.rot90(x, int(torch.randint(0, 4, (1,), generator=g)), dims=(-2, -1))
        c = x.shape[0]
        scale = torch.empty(c, 1, 1).uniform_(*self.intensity, generator=g)
        shift = torch.empty(c, 1, 1).normal_(0, 0.1, generator=g)
        x = x * scale + shift
        if torch.rand(1, generator=g) < self.blur_prob:
            x = gaussian_blur(x, float(torch.empty(1).uniform_(*self.blur_sigma, generator=g)))
        if self.noise > 0:
            x = x + torch.randn(x.shape, generator=g) * self.noise * float(torch.rand(1, generator=g))
        if c > 1 and self.channel_dropout > 0:
            drop = torch.rand(c, generator=g) < self.channel_dropout
            if drop.all():
                drop[int(torch.randint(0, c, (1,), generator=g))] = False
            x = x * (~drop).to(x.dtype).view(c, 1, 1)
        return x.contiguous()


class MultiCrop:
    """2 global views and `n_local` smaller local views of one image."""

    def __init__(self, global_size: int, local_size: int, n_local: int,
                 global_scale=(0.4, 1.0), local_scale=(0.1, 0.4), **kwargs):
        self.global_aug = Augment(CropSpec(global_size, tuple(global_scale)), **kwargs)
        self.local_aug = Augment(CropSpec(local_size, tuple(local_scale)), **kwargs)
        self.n_local = n_local

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> list[torch.Tensor]:
        return [self.global_aug(x, g), self.global_aug(x, g)] + [self.local_aug(x, g) for _ in range(self.n_local)]
