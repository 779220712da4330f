"""DINOv2 / DINOv3 backbones equal Meta's forward. Each test writes a small model in Meta's released
layout (`meta_reference`), converts it to timm's hub layout with timm's own `checkpoint_filter_fn` (as
the hub files were made), saves it under the config's `backbone.weights` name, builds the backbone
through its config, and compares every pooling with the forward `meta_reference` writes from Meta's
arithmetic."""

from __future__ import annotations

import contextlib
import io

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models.eva import checkpoint_filter_fn as eva_filter
from timm.models.vision_transformer import checkpoint_filter_fn as vit_filter

from tests.backbones import meta_reference as meta
from tests.conftest import compose_config
from xferlab.backbones.weights import WeightsError
from xferlab.runtime.building import build

SMALL = {"embed_dim": meta.WIDTH, "depth": meta.DEPTH, "num_heads": meta.HEADS}
POOLINGS = (("cls", 1), ("cls_avg", 2), ("last4", 4))


def hub_file(folder, cfg, state: dict[str, torch.Tensor], img_size: int):
    """Meta's state converted as timm's hub files were: timm's filter for a model of the file's size."""
    model = timm.create_model(cfg.arch, pretrained=False, num_classes=0, img_size=img_size, **SMALL)
    with contextlib.redirect_stdout(io.StringIO()):  # timm prints why it drops DINOv3's qkv bias
        converted = (eva_filter if "dinov3" in cfg.arch else vit_filter)(dict(state), model)
    model.load_state_dict(converted)  # the conversion fits timm's model (strictly)
    path = folder / cfg.weights
    save_file({k: v.contiguous() for k, v in converted.items()}, str(path))
    return path


def config(backbone: str, size: int, *overrides: str):
    return compose_config([f"backbone={backbone}", f"backbone.preprocess.input_size={size}", *overrides]).backbone


def dinov2_case(tmp_path, backbone: str, file_grid: int, input_grid: int, *overrides: str, seed: int = 0):
    """(backbone, Meta's poolings, input) for a DINOv2 file of `file_grid` patches a side at `input_grid`."""
    registers, antialias, offset = meta.DINOV2_HUB[backbone]
    cfg = config(backbone, input_grid * 14, *overrides)
    state = meta.dinov2_state(14, file_grid, registers, seed=seed)
    path = hub_file(tmp_path, cfg, state, file_grid * 14)
    bb = build(cfg)
    assert bb.file_sha256 is not None and str(path) in bb.weights_source
    x = torch.randn(2, 3, input_grid * 14, input_grid * 14, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        return bb, meta.dinov2_forward(state, x, antialias, offset), x


def dinov3_case(tmp_path, backbone: str, input_grid: int, *overrides: str, seed: int = 0):
    cfg = config(backbone, input_grid * 16, *overrides)
    state = meta.dinov3_state(16, seed=seed)
    path = hub_file(tmp_path, cfg, state, 64)
    bb = build(cfg)
    assert bb.file_sha256 is not None and str(path) in bb.weights_source
    x = torch.randn(2, 3, input_grid * 16, input_grid * 16, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        return bb, meta.dinov3_forward(state, x), x


def assert_equals_meta(bb, expected: dict[str, torch.Tensor], x: torch.Tensor):
    for features, width in POOLINGS:
        bb.features = features
        with torch.no_grad():
            out = bb(x)
        assert out.shape == (2, width * meta.WIDTH) == (2, bb.embed_dim)
        torch.testing.assert_close(out, expected[features], atol=1e-4, rtol=1e-4, msg=lambda m: f"{features}: {m}")


DINOV2_CASES = [  # backbone, file grid, input grid: a smaller grid (Meta's 37 -> 16 at 224 px), a larger one, the same
    ("dinov2_vits14", 7, 4), ("dinov2_vits14", 4, 6), ("dinov2_vitb14", 7, 4),
    ("dinov2_vits14_reg4", 7, 4), ("dinov2_vits14_reg4", 4, 6), ("dinov2_vitb14_reg4", 7, 4), ("dinov2_vitb14", 5, 5),
]


@pytest.mark.parametrize("backbone,file_grid,input_grid", DINOV2_CASES)
def test_dinov2_equals_metas_forward(tmp_path, monkeypatch, backbone, file_grid, input_grid):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    bb, expected, x = dinov2_case(tmp_path, backbone, file_grid, input_grid)
    assert_equals_meta(bb, expected, x)


@pytest.mark.parametrize("backbone,input_grid", [("dinov3_vits16", 4), ("dinov3_vitb16", 5)])
def test_dinov3_equals_metas_forward(tmp_path, monkeypatch, backbone, input_grid):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    bb, expected, x = dinov3_case(tmp_path, backbone, input_grid)
    assert_equals_meta(bb, expected, x)


@pytest.mark.parametrize("backbone", ["dinov2_vits14", "dinov2_vits14_reg4", "dinov3_vits16"])
def test_at_the_configured_input_size_from_the_released_grid(tmp_path, monkeypatch, backbone):
    """The shipped configs as they are: DINOv2 at 224 px from the released 37 x 37 grid (518 px),
    DINOv3 at 256 px (small width and depth; the grids and input sizes are the real ones)."""
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    size = int(compose_config([f"backbone={backbone}"]).backbone.preprocess.input_size)
    if backbone.startswith("dinov2"):
        assert size == 224
        bb, expected, x = dinov2_case(tmp_path, backbone, 37, size // 14)
    else:
        assert size == 256
        bb, expected, x = dinov3_case(tmp_path, backbone, size // 16)
    assert x.shape[-1] == size
    assert_equals_meta(bb, expected, x)


def test_dinov2_positions_are_resampled_once_and_fix_the_input_size(tmp_path, monkeypatch):
    """The file's 7 x 7 grid becomes the model's 4 x 4 at load time (class position kept); the
    resampled table is part of the weights digest, the rule part of the identity (the cache key) where
    it changed the model, and an input of another size is an error."""
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    bb, _, _ = dinov2_case(tmp_path, "dinov2_vits14", 7, 4)
    timm_rule, _, _ = dinov2_case(tmp_path, "dinov2_vits14", 7, 4, "backbone.pos_embed_resize=null")
    native, _, _ = dinov2_case(tmp_path, "dinov2_vits14", 7, 7)
    assert native.model_kwargs["img_size"] == 98 and "positions" not in native.identity()
    assert bb.model.pos_embed.shape == (1, 1 + 16, meta.WIDTH) and not bb.model.dynamic_img_size
    assert bb.model_kwargs["img_size"] == 56 and "dynamic_img_size" not in bb.model_kwargs
    assert bb.identity()["positions"] == {"pos_embed_resize": {"antialias": False, "offset": 0.1}}
    assert timm_rule.model.dynamic_img_size and "positions" not in timm_rule.identity()  # null: timm's rule, as before
    assert bb.weights_sha256 != timm_rule.weights_sha256
    with pytest.raises(AssertionError, match="doesn't match model"):
        bb(torch.randn(1, 3, 70, 70))


def test_dinov3_rope_periods_are_the_released_bfloat16_ones_and_enter_the_cache_key(tmp_path, monkeypatch):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    bb, expected, x = dinov3_case(tmp_path, "dinov3_vits16", 4)
    timm_rule, _, _ = dinov3_case(tmp_path, "dinov3_vits16", 4, "backbone.rope_periods=null")
    released = meta.dinov3_state()["rope_embed.periods"].float()
    torch.testing.assert_close(bb.model.rope.periods, released, atol=0, rtol=0)
    assert not torch.equal(timm_rule.model.rope.periods, released)  # timm's float32 periods
    assert bb.weights_sha256 == timm_rule.weights_sha256  # periods are not in the state dict...
    assert bb.identity() != timm_rule.identity()  # ...so the identity (the cache key) names them
    assert bb.identity()["positions"] == {"rope_periods": "bfloat16"}
    with torch.no_grad():
        assert (timm_rule(x) - expected["cls"]).abs().max() > 1e-4  # the periods matter
    bb.model.to(torch.bfloat16)  # timm rebuilds downcast periods in float32: still the released ones
    assert bb.model.rope.periods.dtype == torch.float32
    torch.testing.assert_close(bb.model.rope.periods, released, atol=0, rtol=0)


def test_position_keys_are_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    with pytest.raises(ValueError, match=r"backbone.pos_embed_resize=.*; give \{antialias: true\|false"):
        dinov2_case(tmp_path, "dinov2_vits14", 7, 4, "backbone.pos_embed_resize.antialias=maybe")
    with pytest.raises(ValueError, match=r"backbone.pos_embed_resize.offset=1.5; expected 0 <= offset < 1"):
        dinov2_case(tmp_path, "dinov2_vits14", 7, 4, "backbone.pos_embed_resize.offset=1.5")
    with pytest.raises(ValueError, match="backbone.rope_periods='float16'; choose one of"):
        dinov3_case(tmp_path, "dinov3_vits16", 4, "backbone.rope_periods=float16")


def test_registers_are_left_out_of_the_patch_mean(tmp_path, monkeypatch):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    bb, _, x = dinov2_case(tmp_path, "dinov2_vits14_reg4", 3, 3)
    bb.features = "cls_avg"
    with torch.no_grad():
        tokens = bb.model.forward_features(x)
        out = bb(x)
    assert tokens.shape[1] == 1 + 4 + 9  # class token, 4 registers, 3 x 3 patches
    torch.testing.assert_close(out[:, meta.WIDTH:], tokens[:, 5:].mean(1))
    assert not torch.allclose(out[:, meta.WIDTH:], tokens[:, 1:].mean(1))


def test_a_file_of_another_variant_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    plain = config("dinov2_vits14", 42)
    path = hub_file(tmp_path, plain, meta.dinov2_state(14, 3, 0), 42)
    with pytest.raises(WeightsError, match=r"do not fit the model: missing \['reg_token'\]"):
        build(config("dinov2_vits14_reg4", 42, f"backbone.weights={path}"))


def test_an_input_size_off_the_patch_grid_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    cfg = config("dinov3_vits16", 40)
    hub_file(tmp_path, cfg, meta.dinov3_state(16), 48)
    with pytest.raises(ValueError, match="input_size=40 is not a multiple of its patch size 16; use e.g. 32, 48"):
        build(cfg)
    cfg = config("dinov2_vits14", 50)
    hub_file(tmp_path, cfg, meta.dinov2_state(14, 7, 0), 98)
    with pytest.raises(ValueError, match="input_size=50 is not a multiple of its patch size 14; use e.g. 42, 56"):
        build(cfg)
