"""DINOv2 / DINOv3 backbones: a file in the published (timm hub) layout, written here from a small
model of the same structure, loads strictly through the shipped config and reproduces timm's own
model loaded from the same file, for every pooling."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from tests.conftest import compose_config
from xferlab.backbones.weights import WeightsError
from xferlab.runtime.building import build

SMALL = {"embed_dim": 128, "depth": 4, "num_heads": 2}  # head width 64, as the published models


def published_file(folder, config, img_size: int, seed: int = 0):
    """A small model of the config's architecture, saved as `backbone.weights` in the folder."""
    torch.manual_seed(seed)
    model = timm.create_model(config.arch, pretrained=False, num_classes=0, img_size=img_size, **SMALL)
    with torch.no_grad():  # layer scales start at 1e-5: make every block matter
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.3 if "gamma" in name else 0.02))
    path = folder / config.weights
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def timm_reference(config, path, img_size: int, dynamic: bool):
    """timm's own loading of the file (its pretrained-weights path), the reference forward."""
    kwargs = {"dynamic_img_size": True} if dynamic else {}
    model = timm.create_model(config.arch, pretrained=True, pretrained_cfg_overlay={"file": str(path)},
                              num_classes=0, img_size=img_size, **SMALL, **kwargs)
    return model.eval()


def pooled(model, x, features):
    tokens = model.forward_features(x)
    if features == "cls":
        return tokens[:, 0]
    if features == "cls_avg":
        return torch.cat([tokens[:, 0], tokens[:, model.num_prefix_tokens:].mean(1)], dim=1)
    blocks = []
    hooks = [model.blocks[i].register_forward_hook(lambda m, i, out: blocks.append(out))
             for i in range(len(model.blocks) - 4, len(model.blocks))]
    model.forward_features(x)
    for h in hooks:
        h.remove()
    blocks = [b[0] if isinstance(b, tuple) else b for b in blocks]
    return torch.cat([model.norm(b)[:, 0] for b in blocks], dim=1)


CASES = [  # backbone, patch, file grid, input grid (a different grid: position embeddings interpolated)
    ("dinov2_vits14", 14, 3, 3), ("dinov2_vits14_reg4", 14, 3, 4), ("dinov2_vitb14", 14, 2, 3),
    ("dinov2_vitb14_reg4", 14, 3, 3), ("dinov3_vits16", 16, 3, 3), ("dinov3_vitb16", 16, 2, 4),
]


@pytest.mark.parametrize("backbone,patch,file_grid,input_grid", CASES)
def test_published_layout_loads_strictly_and_matches_the_reference(tmp_path, monkeypatch, backbone, patch,
                                                                   file_grid, input_grid):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    size = input_grid * patch
    cfg = compose_config([f"backbone={backbone}", f"backbone.preprocess.input_size={size}"]).backbone
    path = published_file(tmp_path, cfg, file_grid * patch)
    bb = build(cfg)
    assert bb.file_sha256 is not None and str(path) in bb.weights_source
    reference = timm_reference(cfg, path, file_grid * patch, dynamic=input_grid != file_grid)
    x = torch.randn(2, 3, size, size)
    for features, width in (("cls", 1), ("cls_avg", 2), ("last4", 4)):
        bb.features = features
        with torch.no_grad():
            expected = pooled(reference, x, features)
            out = bb(x)
        assert out.shape == (2, width * 128) == (2, bb.embed_dim)
        torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


def test_registers_are_left_out_of_the_patch_mean(tmp_path, monkeypatch):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    cfg = compose_config(["backbone=dinov2_vits14_reg4", "backbone.features=cls_avg",
                          "backbone.preprocess.input_size=42"]).backbone
    published_file(tmp_path, cfg, 42)
    bb = build(cfg)
    x = torch.randn(1, 3, 42, 42)
    with torch.no_grad():
        tokens = bb.model.forward_features(x)
        out = bb(x)
    assert tokens.shape[1] == 1 + 4 + 9  # class token, 4 registers, 3 x 3 patches
    torch.testing.assert_close(out[:, 128:], tokens[:, 5:].mean(1))
    assert not torch.allclose(out[:, 128:], tokens[:, 1:].mean(1))


def test_a_file_of_another_variant_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    plain = compose_config(["backbone=dinov2_vits14", "backbone.preprocess.input_size=42"]).backbone
    path = published_file(tmp_path, plain, 42)
    cfg = compose_config(["backbone=dinov2_vits14_reg4", "backbone.preprocess.input_size=42",
                          f"backbone.weights={path}"]).backbone
    with pytest.raises(WeightsError, match=r"do not fit the model: missing \['reg_token'\]"):
        build(cfg)


def test_an_input_size_off_the_patch_grid_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    cfg = compose_config(["backbone=dinov3_vits16", "backbone.preprocess.input_size=40"]).backbone
    published_file(tmp_path, cfg, 48)
    with pytest.raises(ValueError, match="input_size=40 is not a multiple of its patch size 16; use e.g. 32, 48"):
        build(cfg)
