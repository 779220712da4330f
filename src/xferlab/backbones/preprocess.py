"""Preprocessing between the image store and the backbone: geometry, intensities, channel mapping.

One implementation serves extraction (`Preprocessor.views`) and DINO pretraining
(`Preprocessor.pretraining_inputs`), so what a backbone is pretrained on and what it is evaluated
on cannot drift apart.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from xferlab.backbones.geometry import FITS, MatchedView, tile_starts

log = logging.getLogger(__name__)

NORMALIZATIONS = ("zscore", "dataset", "backbone")
SCALES = ("resize", "match")  # resize: every image to input_size; match: the pretraining's micrometres per pixel
FAR = 1.5  # a pixel or input size this many times off the pretraining's is warned about
INTENSITIES = ("percentile", "minmax", "minmax_stack", "by255", "dtype")  # normalize=backbone: how pixels reach [0, 1]
DEFAULT_PERCENTILES = (1.0, 99.8)
EPS = 1e-6
STACK_EPS = 1e-6  # SubCellPortable's min_max_standardize: (x - min) / (max - min + 1e-6)
UPSAMPLED = 2.0  # scale=match interpolating stored pixels more than this many times finer is warned about


def check_unit_range(store, intensity: str = "dtype") -> None:
    """`intensity=dtype` (and `by255`) reads float pixels as intensities in [0, 1]. A float store whose
    per-channel mean and std are impossible for values in [0, 1] (mean outside [0, 1], or variance
    above mean * (1 - mean), the most values in [0, 1] can have) is refused: its pixels would reach
    the backbone unscaled."""
    for name, mean, std in zip(store.channel_names, store.channel_mean, store.channel_std):
        if not (-1e-6 <= mean <= 1 + 1e-6) or std**2 > mean * (1 - mean) + 1e-6:
            raise ValueError(
                f"backbone.preprocess.normalize=backbone with intensity={intensity} expects float pixels in [0, 1], but "
                f"{store.path} holds {np.dtype(store.images.dtype)} pixels outside that range (channel {name!r}: mean "
                f"{mean:.4g}, std {std:.4g}). Use backbone.preprocess.intensity=percentile (per image), "
                "normalize=zscore (per image) or dataset (store statistics), or store the pixels scaled to [0, 1] "
                "(or as integers, which are scaled by their dtype's range)."
            )


def percentiles_of(x: torch.Tensor, q: Sequence[float]) -> list[torch.Tensor]:
    """Per image and channel percentiles of `(B, C, H, W)` (linear interpolation, as numpy's
    default), each `(B, C, 1, 1)`. Sorting instead of `torch.quantile`, which refuses large inputs."""
    flat = x.flatten(2).sort(dim=-1).values
    n = flat.shape[-1]
    out = []
    for p in q:
        pos = (n - 1) * float(p) / 100.0
        lo, frac = int(np.floor(pos)), pos - np.floor(pos)
        hi = min(lo + 1, n - 1)
        value = flat[..., lo] + (flat[..., hi] - flat[..., lo]) * frac
        out.append(value[..., None, None])
    return out


def fit(x: torch.Tensor, size: int) -> torch.Tensor:
    """Centre crop or zero-pad `(B, C, H, W)` to `size` x `size` (0: the mean after z-scoring, black
    after the [0, 1] intensity step)."""
    out = []
    for dim in (2, 3):
        n = x.shape[dim]
        if n > size:
            x = x.narrow(dim, (n - size) // 2, size)
        out.append(max(size - n, 0))
    (ph, pw) = out
    if ph or pw:
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    return x


def tile(x: torch.Tensor, size: int) -> torch.Tensor:
    """`(B, C, H, W)` -> `(B * T, C, size, size)`: the fewest `size` squares covering each image
    (`geometry.tile_starts`), image by image; a side shorter than `size` is zero-padded first."""
    ph, pw = max(size - x.shape[2], 0), max(size - x.shape[3], 0)
    if ph or pw:
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    tiles = [x[:, :, y : y + size, left : left + size]
             for y in tile_starts(x.shape[2], size) for left in tile_starts(x.shape[3], size)]
    return torch.stack(tiles, dim=1).flatten(0, 1)


def with_checkpoint_scale(config: Mapping[str, Any], pretraining: Mapping[str, Any] | None) -> dict[str, Any]:
    """`backbone.preprocess` with the pretraining's pixel size and input size filled in from what
    xferlab's pretraining recorded in the checkpoint, where the config leaves them null."""
    out = dict(config)
    recorded = {"pretrained_pixel_size_um": (pretraining or {}).get("input_pixel_size_um"),
                "pretrained_input_size": (pretraining or {}).get("input_size")}
    for key, value in recorded.items():
        if out.get(key) is None and value is not None:
            out[key] = value
    return out


def scale_warnings(input_size: int | None, image_size: int, pixel_size_um: float | None, scale: str,
                   pretrained_pixel_size_um: float | None, pretrained_input_size: int | None) -> list[str]:
    """What is far (more than FAR times) from the backbone's pretraining: the micrometres one input
    pixel covers, and the input size."""
    notes = []
    if scale == "resize" and None not in (input_size, pixel_size_um, pretrained_pixel_size_um):
        seen = pixel_size_um * image_size / input_size
        ratio = seen / pretrained_pixel_size_um
        if not 1 / FAR <= ratio <= FAR:
            notes.append(f"one input pixel covers {seen:.3g} um ({image_size} px of {pixel_size_um:.3g} um resized to "
                         f"{input_size}), {ratio:.2g}x the {pretrained_pixel_size_um:.3g} um of its pretraining; "
                         "backbone.preprocess.scale=match resamples to the pretraining's pixel size")
    if None not in (input_size, pretrained_input_size):
        ratio = input_size / pretrained_input_size
        if not 1 / FAR <= ratio <= FAR:
            notes.append(f"input size {input_size} px is {ratio:.2g}x the {pretrained_input_size} px of its pretraining")
    return notes


def stretch(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """`lo` -> 0 and `hi` -> 1, clipped to [0, 1]; a channel with `hi <= lo` (constant) becomes 0."""
    span = hi - lo
    flat = span <= 0
    out = ((x - lo) / torch.where(flat, torch.ones_like(span), span)).clamp(0.0, 1.0)
    return torch.where(flat, torch.zeros_like(out), out)


class Preprocessor:
    """Raw store images `(B, C, H, W)` (any dtype) -> backbone input `(B, K, S, S)` float32.

    Geometry (`scale`): `resize` brings every image to `input_size` (whatever its pixel size);
    `match` resamples it so that one input pixel covers the micrometres it covered in the
    backbone's pretraining (`pretrained_pixel_size_um`; the store's `pixel_size_um`), then fits it
    to `input_size` (`fit`, see `geometry`): `centre` crops its centre or pads it (with 0, after
    the intensity step), and warns naming what is dropped; `tiles` covers it with input-size tiles
    (each image then gives several inputs, whose embeddings the extractor averages).

    Intensities (`normalize`), per dataset channel before channel mapping:
    - `zscore`: each image and channel to zero mean, unit variance (a constant channel becomes 0);
    - `dataset`: each channel by the store's per-channel mean and std;
    - `backbone`: intensities brought to [0, 1] (`intensity`), then the backbone's own per-slot
      `mean` / `std` after channel mapping (e.g. ImageNet statistics). `intensity`:
      `percentile` stretches each image and channel so that its `percentiles` (low, high) become
      0 and 1, clipped (microscopy camera counts fill a few % of their dtype's range);
      `minmax` does the same with each image's and channel's minimum and maximum;
      `minmax_stack` scales each image's whole stack (all its channels) by one minimum and one
      maximum, `(x - min) / (max - min + 1e-6)`, as SubCellPortable's `min_max_standardize` does
      (the channels keep their relative brightness); `by255` divides integer pixels by 255 whatever
      their dtype, as OpenPhenom's `Normalizer` does (float pixels are read as [0, 1], an 8-bit
      image already divided); `dtype` divides by the dtype's range (integers) or reads float pixels
      as [0, 1] (data already scaled, e.g. photographs).
    An empty slot holds 0 (the mean for `zscore` / `dataset`, black for `backbone`).
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
        intensity: str | None = None,
        percentiles: Sequence[float] | None = None,
        scale: str = "resize",
        pixel_size_um: float | None = None,
        pretrained_pixel_size_um: float | None = None,
        fit: str | None = None,
    ):
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"backbone.preprocess.normalize={normalize!r}; choose one of {NORMALIZATIONS}")
        if normalize == "backbone" and (mean is None or std is None):
            raise ValueError("normalize=backbone needs backbone.preprocess.mean and .std")
        if normalize != "backbone" and (intensity is not None or percentiles is not None):
            raise ValueError(
                f"backbone.preprocess.intensity={intensity!r} / percentiles={percentiles!r} apply only to "
                f"normalize=backbone (before the backbone's mean/std); normalize={normalize!r} sets the intensities "
                "itself. Remove intensity / percentiles, or use normalize=backbone."
            )
        if normalize == "backbone":
            intensity = "dtype" if intensity is None else intensity
            if intensity not in INTENSITIES:
                raise ValueError(f"backbone.preprocess.intensity={intensity!r}; choose one of {INTENSITIES}")
            if intensity == "percentile":
                percentiles = tuple(DEFAULT_PERCENTILES if percentiles is None else percentiles)
                if len(percentiles) != 2 or not 0 <= float(percentiles[0]) < float(percentiles[1]) <= 100:
                    raise ValueError(f"backbone.preprocess.percentiles={list(percentiles)}: expected [low, high] "
                                     "with 0 <= low < high <= 100, e.g. [1, 99.8]")
                percentiles = [float(p) for p in percentiles]
            elif percentiles is not None:
                raise ValueError(f"backbone.preprocess.percentiles={list(percentiles)} is set but intensity="
                                 f"{intensity}; percentiles apply to intensity=percentile only")
        if scale not in SCALES:
            raise ValueError(f"backbone.preprocess.scale={scale!r}; choose one of {SCALES}")
        if scale == "match":
            missing = [k for k, v in (("backbone.preprocess.input_size", input_size),
                                      ("backbone.preprocess.pretrained_pixel_size_um", pretrained_pixel_size_um),
                                      ("the store's pixel_size_um (dataset.pixel_size_um)", pixel_size_um)) if v is None]
            if missing:
                raise ValueError(f"backbone.preprocess.scale=match needs {', '.join(missing)}: it resamples images so "
                                 "that one input pixel covers the micrometres it covered in pretraining. Set them, or "
                                 "use scale=resize (every image resized to input_size).")
        fit = "centre" if fit is None else fit
        if fit not in FITS:
            raise ValueError(f"backbone.preprocess.fit={fit!r}; choose one of {FITS}")
        if fit == "tiles" and scale != "match":
            raise ValueError(f"backbone.preprocess.fit=tiles covers an image resampled by scale=match with tiles, "
                             f"but scale={scale}: with resize every image is already one input. Use scale=match, "
                             "or fit=centre.")
        self.fit = fit
        self.scale = scale
        self.pixel_size_um = None if pixel_size_um is None else float(pixel_size_um)
        self.pretrained_pixel_size_um = None if pretrained_pixel_size_um is None else float(pretrained_pixel_size_um)
        self.input_size = None if input_size is None else int(input_size)
        self.normalize = normalize
        self.intensity = intensity
        self.percentiles = percentiles
        self.mean = None if mean is None else [float(v) for v in mean]
        self.std = None if std is None else [float(v) for v in std]
        self.dataset_mean = None if dataset_mean is None else [float(v) for v in dataset_mean]
        self.dataset_std = None if dataset_std is None else [float(v) for v in dataset_std]
        self.dtype_max = dtype_max
        self.integer_pixels = dtype_max is not None and dtype_max > 1.0  # for_store: 1.0 for float pixels

    @classmethod
    def for_store(cls, config: dict[str, Any], store) -> "Preprocessor":
        dtype = np.dtype(store.images.dtype)
        dtype_max = float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0
        pre = cls(
            config.get("input_size"),
            config.get("normalize", "zscore"),
            mean=config.get("mean"),
            std=config.get("std"),
            dataset_mean=store.channel_mean.tolist(),
            dataset_std=store.channel_std.tolist(),
            dtype_max=dtype_max,
            intensity=config.get("intensity"),
            percentiles=config.get("percentiles"),
            scale=config.get("scale") or "resize",
            pixel_size_um=getattr(store, "pixel_size_um", None),
            pretrained_pixel_size_um=config.get("pretrained_pixel_size_um"),
            fit=config.get("fit"),
        )
        if pre.intensity in ("dtype", "by255") and dtype.kind == "f":
            check_unit_range(store, pre.intensity)
        for note in scale_warnings(pre.input_size, int(store.images.shape[-1]), pre.pixel_size_um, pre.scale,
                                   pre.pretrained_pixel_size_um, config.get("pretrained_input_size")):
            log.warning("%s: %s", store.path, note)
        for note in pre.match_warnings(int(store.images.shape[-1])):
            log.warning("%s: %s", store.path, note)
        return pre

    def matched_view(self, image_size: int) -> MatchedView | None:
        """What the backbone sees of a stored image of `image_size` px under scale=match (None: resize)."""
        if self.scale != "match":
            return None
        return MatchedView(int(image_size), self.pixel_size_um, self.pretrained_pixel_size_um, self.input_size, self.fit)

    def match_warnings(self, image_size: int) -> list[str]:
        """scale=match: what is dropped (fit=centre on an image larger than the input), and stored
        pixels interpolated far finer than they are."""
        view = self.matched_view(image_size)
        if view is None:
            return []
        notes = []
        if view.share < 1.0:
            notes.append(f"backbone.preprocess.scale=match shows the backbone {view.describe()}; the rest is not seen. "
                         "backbone.preprocess.fit=tiles embeds the whole image at that scale (tiles averaged); "
                         "scale=resize shows it whole in one input")
        if view.upsampling > UPSAMPLED:
            notes.append(f"backbone.preprocess.scale=match resamples the stored {view.pixel_size_um:.3g} um pixels to "
                         f"{view.pretrained_pixel_size_um:.3g} um, {view.upsampling:.2g}x finer: the backbone sees "
                         "interpolated pixels, not detail. Store the images at a higher resolution (dataset.size)")
        return notes

    def inputs_per_image(self, image_size: int) -> int:
        """Backbone inputs (tiles) each image of `image_size` px gives; 1 unless fit=tiles."""
        view = self.matched_view(image_size)
        return 1 if view is None else view.tiles

    def __call__(self, images: torch.Tensor, adapter: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """One backbone input per image (the adapter's single view)."""
        (view,) = self.views(images, lambda x: [adapter(x)])
        if len(view) != len(images):
            raise ValueError(f"backbone.preprocess.fit=tiles gives {len(view) // len(images)} inputs per image; "
                             "this step needs one (a head that trains on images, e.g. head=finetune). Use fit=centre "
                             "or scale=resize")
        return view

    def views(self, images: torch.Tensor, make_views: Callable[[torch.Tensor], list[torch.Tensor]]) -> list[torch.Tensor]:
        """The backbone inputs for a batch: resize and normalise, then map channels into one or
        more views (see `ChannelAdapter.views`), then the backbone's own normalisation."""
        x = images.float()
        if self.scale == "match":
            factor = self.pixel_size_um / self.pretrained_pixel_size_um
            size = tuple(max(1, int(round(n * factor))) for n in x.shape[-2:])
            if size != tuple(x.shape[-2:]):
                x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
            shaped = tile if self.fit == "tiles" else fit
            return self.slot_normalise(make_views(shaped(self.intensities(x), self.input_size)))
        if self.input_size is not None and x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              antialias=True, align_corners=False)
        return self.slot_normalise(make_views(self.intensities(x)))

    def pretraining_inputs(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Whole store images `(N, C, H, W)` prepared for DINO pretraining, whose store channels are
        the backbone's input slots: the same intensity steps as `views`, at the store's resolution
        (the multi-crop augmentation then samples the geometry)."""
        x = torch.from_numpy(np.asarray(images, dtype=np.float32)) if isinstance(images, np.ndarray) else images.float()
        (out,) = self.slot_normalise([self.intensities(x)])
        return out

    def intensities(self, x: torch.Tensor) -> torch.Tensor:
        """The per-dataset-channel intensity step on float images `(B, C, H, W)`."""
        if self.normalize == "zscore":
            mu = x.mean(dim=(2, 3), keepdim=True)
            sd = x.std(dim=(2, 3), keepdim=True, unbiased=False)
            return (x - mu) / (sd + EPS)
        if self.normalize == "dataset":
            mu = torch.tensor(self.dataset_mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            sd = torch.tensor(self.dataset_std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            return (x - mu) / (sd + EPS)
        if self.intensity == "percentile":
            return stretch(x, *percentiles_of(x, self.percentiles))
        if self.intensity == "minmax":
            return stretch(x, x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True))
        if self.intensity == "minmax_stack":
            lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
            return (x - lo) / (hi - lo + STACK_EPS)
        if self.intensity == "by255":
            return x / 255.0 if self.integer_pixels else x
        return x / self.dtype_max

    def slot_normalise(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """`normalize=backbone`: the backbone's own per-slot mean / std; otherwise nothing."""
        if self.normalize != "backbone":
            return views
        out = []
        for v in views:
            if len(self.mean) != v.shape[1]:
                raise ValueError(f"backbone mean/std have {len(self.mean)} values for {v.shape[1]} input slots")
            mu = torch.tensor(self.mean, dtype=v.dtype, device=v.device).view(1, -1, 1, 1)
            sd = torch.tensor(self.std, dtype=v.dtype, device=v.device).view(1, -1, 1, 1)
            out.append((v - mu) / sd)
        return out

    def describe(self) -> dict[str, Any]:
        """Everything that changes the backbone input (part of the embedding cache key). Keys added
        later enter only when they differ from the behaviour before them, so older entries keep their key."""
        out: dict[str, Any] = {"input_size": self.input_size, "normalize": self.normalize}
        if self.normalize == "backbone":
            out.update(mean=self.mean, std=self.std, dtype_max=self.dtype_max)
            if self.intensity != "dtype":
                out["intensity"] = self.intensity
            if self.intensity == "percentile":
                out["percentiles"] = self.percentiles
        if self.normalize == "dataset":
            out.update(dataset_mean=self.dataset_mean, dataset_std=self.dataset_std)
        if self.scale == "match":
            out.update(scale="match", pixel_size_um=self.pixel_size_um,
                       pretrained_pixel_size_um=self.pretrained_pixel_size_um)
            if self.fit != "centre":
                out["fit"] = self.fit
        return out

    def input_pixel_size_um(self, image_size: int) -> float | None:
        """Micrometres one backbone input pixel covers (None when the store's pixel size is unknown)."""
        if self.scale == "match":
            return self.pretrained_pixel_size_um
        if self.pixel_size_um is None:
            return None
        return self.pixel_size_um * image_size / (self.input_size or image_size)
