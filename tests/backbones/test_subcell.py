"""SubCell encoders: a file in the released layout (`encoder.*` Hugging Face ViT keys and
`pool_model.*` gated attention pooler), written here for a small model of the same structure,
loads strictly through the shipped configs and gives the embedding of a plain reference forward."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import compose_config
from xferlab.backbones.preprocess import Preprocessor
from xferlab.backbones.weights import WeightsError
from xferlab.runtime.building import build

DIM, DEPTH, PATCH, GRID, HIDDEN, POOL_HIDDEN, POOL_HEADS = 128, 2, 8, 4, 256, 32, 2


def released_state(in_chans: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the key names of SubCell's released encoder files."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape, scale=0.05: torch.randn(*shape, generator=g) * scale  # noqa: E731
    e = "encoder."
    state = {e + "embeddings.cls_token": r(1, 1, DIM), e + "embeddings.position_embeddings": r(1, GRID * GRID + 1, DIM),
             e + "embeddings.patch_embeddings.projection.weight": r(DIM, in_chans, PATCH, PATCH),
             e + "embeddings.patch_embeddings.projection.bias": r(DIM),
             e + "layernorm.weight": 1 + r(DIM), e + "layernorm.bias": r(DIM)}
    for i in range(DEPTH):
        p = f"{e}encoder.layer.{i}."
        for name in ("attention.attention.query", "attention.attention.key", "attention.attention.value",
                     "attention.output.dense"):
            state.update({p + name + ".weight": r(DIM, DIM), p + name + ".bias": r(DIM)})
        state.update({p + "intermediate.dense.weight": r(HIDDEN, DIM), p + "intermediate.dense.bias": r(HIDDEN),
                      p + "output.dense.weight": r(DIM, HIDDEN), p + "output.dense.bias": r(DIM)})
        for norm in ("layernorm_before", "layernorm_after"):
            state.update({p + norm + ".weight": 1 + r(DIM), p + norm + ".bias": r(DIM)})
    for branch in ("attention_v", "attention_u"):
        state.update({f"pool_model.{branch}.1.weight": r(POOL_HIDDEN, DIM, scale=0.2),
                      f"pool_model.{branch}.1.bias": r(POOL_HIDDEN)})
    state.update({"pool_model.attention.weight": r(POOL_HEADS, POOL_HIDDEN, scale=0.5),
                  "pool_model.attention.bias": r(POOL_HEADS)})
    return state


def reference_embedding(s: dict[str, torch.Tensor], x: torch.Tensor, pooled: bool = True) -> torch.Tensor:
    """SubCell's forward from the raw tensors: ViT tokens after the final norm, then the pooler."""
    ln = lambda t, key: F.layer_norm(t, (DIM,), s[key + ".weight"], s[key + ".bias"], eps=1e-12)  # noqa: E731
    lin = lambda t, key: t @ s[key + ".weight"].T + s[key + ".bias"]  # noqa: E731
    e = "encoder."
    t = F.conv2d(x, s[e + "embeddings.patch_embeddings.projection.weight"],
                 s[e + "embeddings.patch_embeddings.projection.bias"], stride=PATCH)
    rows, cols = t.shape[-2:]
    t = torch.cat([s[e + "embeddings.cls_token"].expand(len(x), -1, -1), t.flatten(2).transpose(1, 2)], dim=1)
    pos = s[e + "embeddings.position_embeddings"]
    if (rows, cols) != (GRID, GRID):  # Hugging Face ViT's interpolate_pos_encoding
        grid = pos[:, 1:].reshape(1, GRID, GRID, DIM).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", align_corners=False)
        pos = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, rows * cols, DIM)], dim=1)
    t = t + pos
    heads = DIM // 64
    for i in range(DEPTH):
        p = f"{e}encoder.layer.{i}."
        h = ln(t, p + "layernorm_before")
        q, k, v = (lin(h, p + f"attention.attention.{n}").reshape(len(x), -1, heads, 64).transpose(1, 2)
                   for n in ("query", "key", "value"))
        a = ((q @ k.transpose(-2, -1)) / math.sqrt(64)).softmax(-1) @ v
        t = t + lin(a.transpose(1, 2).reshape(len(x), -1, DIM), p + "attention.output.dense")
        h = F.gelu(lin(ln(t, p + "layernorm_after"), p + "intermediate.dense"))
        t = t + lin(h, p + "output.dense")
    t = ln(t, e + "layernorm")
    if not pooled:
        return t[:, 0]
    gate = torch.tanh(lin(t, "pool_model.attention_v.1")) * F.gelu(lin(t, "pool_model.attention_u.1"))
    weights = lin(gate, "pool_model.attention").permute(0, 2, 1).softmax(dim=-1)  # (B, heads, tokens)
    return torch.bmm(weights, t).reshape(len(x), -1)


VARIANTS = {"subcell_rybg": 4, "subcell_rbg": 3, "subcell_ybg": 3, "subcell_bg": 2}


def config(backbone: str, *extra: str):
    return compose_config([f"backbone={backbone}", "backbone.preprocess.scale=resize",
                           f"backbone.preprocess.input_size={GRID * PATCH}", *extra]).backbone


@pytest.mark.parametrize("backbone,channels", VARIANTS.items())
def test_released_layout_loads_strictly_and_embeds_as_the_reference(tmp_path, monkeypatch, backbone, channels):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    cfg = config(backbone)
    state = released_state(channels)
    torch.save(state, tmp_path / cfg.weights)
    bb = build(cfg)
    assert len(bb.in_channels) == channels and bb.file_sha256 is not None
    for size in (GRID * PATCH, (GRID + 2) * PATCH):  # the stored grid, and one interpolated
        x = torch.rand(3, channels, size, size)
        with torch.no_grad():
            out = bb(x)
        assert out.shape == (3, POOL_HEADS * DIM) == (3, bb.embed_dim)
        torch.testing.assert_close(out, reference_embedding(state, x), atol=1e-4, rtol=1e-4)
    bb.features = "cls"
    with torch.no_grad():
        torch.testing.assert_close(bb(x), reference_embedding(state, x, pooled=False), atol=1e-4, rtol=1e-4)
    assert bb.embed_dim == DIM


def test_bg_takes_opencell_channels_as_they_are():
    from xferlab.backbones.channels import NaturalMapping

    slots = list(config("subcell_bg").in_channels)
    adapter = NaturalMapping("natural", ["nucleus", "protein"], slots)
    assert adapter.sources == [0, 1]  # every slot filled, none empty, in the store's order
    x = torch.rand(1, 2, 8, 8)
    assert adapter(x) is x


@pytest.mark.parametrize("drop,add,match", [
    ("pool_model.attention.weight", None, "not a SubCell encoder file"),
    ("pool_model.attention_u.1.bias", None, r"missing \['pool_model.attention_u.1.bias'\]"),
    (None, "decoder.weight", r"unexpected \['decoder.weight'\]"),
])
def test_an_incomplete_or_foreign_file_is_refused_naming_the_keys(tmp_path, monkeypatch, drop, add, match):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    cfg = config("subcell_bg")
    state = released_state(2)
    state.pop(drop, None)
    if add:
        state[add] = torch.zeros(1)
    torch.save(state, tmp_path / cfg.weights)
    with pytest.raises(WeightsError, match=match):
        build(cfg)


def test_a_file_for_other_channels_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    torch.save(released_state(4), tmp_path / "rybg.pth")
    with pytest.raises(WeightsError, match=r"takes 4 channels but backbone.in_channels=\['nucleus', 'protein'\]"):
        build(config("subcell_bg", f"backbone.weights={tmp_path / 'rybg.pth'}"))


def subcellportable_embedding(state: dict[str, torch.Tensor], cell: list[np.ndarray]) -> torch.Tensor:
    """SubCellPortable's inference from one cell's channel images as read from disk (uint16, in the
    model's channel order): `np.stack` on a new axis 1, float, `min_max_standardize` (one minimum
    and one maximum over all channels and pixels, `+ 1e-6`), then the model (`pool_op`)."""
    x = torch.from_numpy(np.stack([[image] for image in cell], axis=1).astype(np.float32))  # (1, C, H, W)
    lo = torch.amin(x, dim=(1, 2, 3), keepdim=True)
    hi = torch.amax(x, dim=(1, 2, 3), keepdim=True)
    return reference_embedding(state, (x - lo) / (hi - lo + 1e-6))


def camera_cells(n: int, size: int, seed: int = 0) -> list[list[np.ndarray]]:
    """uint16 cells with camera-count ranges that differ by channel (a bright nucleus stain, a dim
    tagged protein), as OpenCell's fields have them."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    cells = []
    for _ in range(n):
        blob = np.exp(-((yy - rng.uniform(0.3, 0.7)) ** 2 + (xx - rng.uniform(0.3, 0.7)) ** 2) / 0.03)
        nucleus = 400 + 8000 * blob + rng.normal(0, 60, (size, size))
        protein = 250 + 900 * rng.random((size, size)) * blob ** 0.3 + rng.normal(0, 30, (size, size))
        cells.append([np.clip(c, 0, 65535).astype(np.uint16) for c in (nucleus, protein)])
    return cells


def test_raw_uint16_cells_embed_as_subcellportable_through_each_sides_own_preprocessing(tmp_path, monkeypatch):
    """`backbone=subcell_bg` with its shipped preprocessing (scale=match at SubCell's pixel size,
    intensity=minmax_stack) from the store's raw pixels, against SubCellPortable's own steps from
    the same uint16 images. Cells at SubCell's pixel size and the input size, so neither side
    resamples or pads; the grid is interpolated (4 -> 8 patches) on both."""
    from xferlab.backbones.channels import NaturalMapping

    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    size = 2 * GRID * PATCH
    cfg = compose_config(["backbone=subcell_bg", f"backbone.preprocess.input_size={size}"]).backbone
    assert cfg.preprocess.intensity == "minmax_stack" and cfg.preprocess.scale == "match"
    state = released_state(2, seed=3)
    torch.save(state, tmp_path / cfg.weights)
    bb = build(cfg)
    pre = cfg.preprocess
    p = Preprocessor(pre.input_size, pre.normalize, mean=pre.mean, std=pre.std, intensity=pre.intensity,
                     scale=pre.scale, pixel_size_um=pre.pretrained_pixel_size_um,
                     pretrained_pixel_size_um=pre.pretrained_pixel_size_um, dtype_max=65535.0)
    adapter = NaturalMapping("natural", ["nucleus", "protein"], list(cfg.in_channels))
    cells = camera_cells(3, size)
    store_batch = torch.from_numpy(np.stack([np.stack(c) for c in cells]).astype(np.int32))  # (B, C, H, W) raw
    with torch.no_grad():
        ours = bb(p(store_batch, adapter))
        theirs = torch.cat([subcellportable_embedding(state, c) for c in cells])
        per_channel = bb(Preprocessor(pre.input_size, pre.normalize, mean=pre.mean, std=pre.std, intensity="minmax",
                                      dtype_max=65535.0)(store_batch, adapter))
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    assert float((per_channel - theirs).abs().max()) > 1e-2  # each channel stretched alone is not SubCell's input


def test_scale_match_resamples_to_subcells_pixel_size_before_its_stack_scaling():
    pre = compose_config(["backbone=subcell_bg"]).backbone.preprocess
    p = Preprocessor(pre.input_size, pre.normalize, mean=pre.mean, std=pre.std, intensity=pre.intensity,
                     scale=pre.scale, pixel_size_um=2 * pre.pretrained_pixel_size_um,
                     pretrained_pixel_size_um=pre.pretrained_pixel_size_um, dtype_max=65535.0)
    images = torch.randint(100, 5000, (2, 2, 320, 320), dtype=torch.int32)
    images[:, 1] //= 7  # the protein channel is dimmer
    out = p(images, lambda x: x)
    assert out.shape == (2, 2, 640, 640)  # 320 px at twice SubCell's pixel size: 640 px at its own
    flat = out.flatten(1)
    torch.testing.assert_close(flat.amin(-1), torch.zeros(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(flat.amax(-1), torch.ones(2), atol=1e-5, rtol=0)
    assert float(out[:, 1].amax()) < 0.5  # one scale for the whole stack: the dim channel stays dim
