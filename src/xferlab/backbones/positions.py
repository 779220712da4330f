"""Position information as each publisher's own code computes it, where timm's conversion of the
weights computes it otherwise (`backbone.pos_embed_resize`, `backbone.rope_periods`).

Position-embedding grid resize (DINO, DINOv2). A ViT with learned positions for an M x M patch grid,
run at another grid, resizes the patch positions. timm (`dynamic_img_size`, `resample_abs_pos_embed`)
resizes bicubically to the new size with antialiasing. Meta's code does not always:

- facebookresearch/dinov2, `DinoVisionTransformer.interpolate_pos_encoding`
  (dinov2/models/vision_transformer.py): unchanged when the input grid is the stored one; else the
  patch positions, in float32, `F.interpolate(mode="bicubic", antialias=interpolate_antialias)`, with
  `scale_factor=((rows + offset) / M, (cols + offset) / M)` when `interpolate_offset` is set and
  `size=(rows, cols)` when it is 0 (Meta names the rows `w0`: `B, nc, w, h = x.shape`); the class
  position is kept apart and put back in front. dinov2/hub/backbones.py builds `dinov2_vits14`,
  `dinov2_vitb14` with the defaults `interpolate_antialias=False, interpolate_offset=0.1` and the
  `*_reg` models with `interpolate_antialias=True, interpolate_offset=0.0` (timm's rule).
- facebookresearch/dino (vision_transformer.py, `interpolate_pos_encoding`) and DINO4Cells (its copy):
  the same with offset 0.1, no antialiasing (F.interpolate's default).

Here the resize happens once, when the weights are loaded (`resample_pos_embed`): the model is then
built for the input size, and an input of another size is an error rather than a silent resize.

RoPE periods (DINOv3). facebookresearch/dinov3, `RopePositionEmbedding._init_weights`
(dinov3/layers/rope_position_encoding.py): `periods = base ** (2 * arange(D_head // 4) / (D_head // 2))`
in the module's dtype; training used `pos_embed_rope_dtype="bf16"` (dinov3/models/vision_transformer.py)
and saved the bfloat16 periods with the weights (a persistent buffer). dinov3/hub/backbones.py builds
`dinov3_vits16` / `dinov3_vitb16` with `pos_embed_rope_dtype="fp32"` and loads the released values into
that float32 buffer: inference uses bfloat16-rounded periods with float32 coordinates and angles. timm's
conversion drops `periods` and recomputes them in float32 (`RotaryEmbeddingDinoV3`, a non-persistent
buffer); `set_rope_periods` puts the released rounding back.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import timm
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class GridResize:
    """How a publisher resizes its position grid: bicubic, with or without antialiasing; by the scale
    factor (n + offset) / M when `offset` is set, else to the size n."""

    antialias: bool
    offset: float

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def grid_resize_rule(value: Mapping[str, Any] | None) -> GridResize | None:
    """`backbone.pos_embed_resize` (`{antialias: bool, offset: float}`, or null: timm's own rule)."""
    if value is None:
        return None
    value = dict(value)
    if set(value) != {"antialias", "offset"} or not isinstance(value["antialias"], bool):
        raise ValueError(f"backbone.pos_embed_resize={value}; give {{antialias: true|false, offset: <float>}} "
                         "(DINOv2 {antialias: false, offset: 0.1}; its register models {antialias: true, offset: 0.0}) "
                         "or null for timm's rule")
    offset = float(value["offset"])
    if not 0.0 <= offset < 1.0:
        raise ValueError(f"backbone.pos_embed_resize.offset={offset}; expected 0 <= offset < 1")
    return GridResize(antialias=value["antialias"], offset=offset)


def resample_pos_embed(pos_embed: torch.Tensor, prefix: int, grid: int, rule: GridResize) -> torch.Tensor:
    """(1, prefix + M*M, D) -> (1, prefix + grid*grid, D): the square patch grid resized by `rule` in
    float32, the `prefix` leading positions (the class position, where the file keeps one) unchanged."""
    total = pos_embed.shape[1] - prefix
    m = math.isqrt(total)
    if m * m != total:
        raise ValueError(f"pos_embed of shape {tuple(pos_embed.shape)} with {prefix} prefix positions "
                         "is not a square grid")
    if m == grid:
        return pos_embed
    head, patches = pos_embed[:, :prefix], pos_embed[:, prefix:].float()
    patches = patches.reshape(1, m, m, -1).permute(0, 3, 1, 2)
    if rule.offset:
        kwargs: dict[str, Any] = {"scale_factor": ((grid + rule.offset) / m, (grid + rule.offset) / m)}
    else:
        kwargs = {"size": (grid, grid)}
    patches = F.interpolate(patches, mode="bicubic", antialias=rule.antialias, **kwargs)
    if patches.shape[-2:] != (grid, grid):  # floor(M * (grid + offset) / M) is grid for offset < 1
        raise ValueError(f"resizing a {m} x {m} position grid by {rule} gave {tuple(patches.shape[-2:])}, "
                         f"not {grid} x {grid}")
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).to(pos_embed.dtype)
    return torch.cat([head, patches], dim=1)


ROPE_PERIOD_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def check_rope_periods(value: str | None) -> None:
    """`backbone.rope_periods`: the dtype the publisher computed the RoPE periods in, or null (timm's)."""
    if value is not None and value not in ROPE_PERIOD_DTYPES:
        raise ValueError(f"backbone.rope_periods={value!r}; choose one of {tuple(ROPE_PERIOD_DTYPES)} "
                         "(DINOv3's released files: bfloat16) or null for timm's float32 periods")


def meta_rope_periods(base: float, head_dim: int, dtype: torch.dtype) -> torch.Tensor:
    """`RopePositionEmbedding._init_weights` with `base`, in `dtype`, returned as float32 (the hub's
    float32 buffer holding the released values)."""
    exponents = 2 * torch.arange(head_dim // 4, dtype=dtype) / (head_dim // 2)
    return (base ** exponents).float()


def set_rope_periods(model: nn.Module, dtype_name: str, name: str) -> torch.Tensor:
    """Give timm's DINOv3 RoPE module (`model.rope`, a `RotaryEmbeddingDinoV3`) the periods Meta's
    released weights hold, and refresh what timm derived from them (its cached embedding). The module's
    own period rule is replaced too, so timm's rebuild of the periods after a cast to a lower precision
    (`_apply`) keeps these values. Returns the periods."""
    check_rope_periods(dtype_name)
    rope = getattr(model, "rope", None)
    needed = ("periods", "temperature", "dim", "_compute_periods", "reset_parameters")
    lacking = [a for a in needed if not hasattr(rope, a)]
    if rope is None or lacking:
        raise ValueError(f"backbone={name}: backbone.rope_periods={dtype_name} needs timm's DINOv3 RoPE module "
                         f"(`model.rope` with {', '.join(needed)}); this model's is {type(rope).__name__}"
                         f"{' lacking ' + ', '.join(lacking) if rope is not None else ''} (installed timm "
                         f"{timm.__version__}); set backbone.rope_periods=null "
                         "for timm's periods")
    if getattr(rope, "min_period", None) is not None or rope.temperature is None:
        raise ValueError(f"backbone={name}: backbone.rope_periods is for RoPE with a base (DINOv3's 100), "
                         "not min/max periods")
    periods = meta_rope_periods(rope.temperature, rope.dim, ROPE_PERIOD_DTYPES[dtype_name])
    if rope.periods.shape != periods.shape:
        raise ValueError(f"backbone={name}: timm's RoPE periods have shape {tuple(rope.periods.shape)}, "
                         f"Meta's rule gives {tuple(periods.shape)}")

    def released(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return periods.to(device=device, dtype=dtype)

    rope._compute_periods = released
    rope.reset_parameters()  # periods and, where the grid is fixed, the cached sin / cos
    if not torch.equal(rope.periods.cpu(), periods):
        raise ValueError(f"backbone={name}: the installed timm did not take the RoPE periods set here")
    return periods
