"""DINO backbones (`imagenet`, `hpa` and the configs built on them) at an input size other than their
file's resize the position grid as DINO's own code does (facebookresearch/dino and DINO4Cells,
`VisionTransformer.interpolate_pos_encoding`): bicubic, `scale_factor=((n + 0.1) / sqrt(N), ...)`,
F.interpolate's default (no antialiasing), the class position kept."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.backbones.test_checkpoints import dino_checkpoint
from tests.backbones.vit_reference import random_vit_state, reference_cls
from tests.conftest import compose_config
from xferlab.runtime.building import build


def dino_positions(pos_embed: torch.Tensor, n: int) -> torch.Tensor:
    """DINO's `interpolate_pos_encoding` for an n x n patch grid."""
    m = pos_embed.shape[1] - 1
    side = math.sqrt(m)
    grid = pos_embed[:, 1:].reshape(1, int(side), int(side), -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((n + 0.1) / side, (n + 0.1) / side), mode="bicubic")
    return torch.cat([pos_embed[:, :1], grid.permute(0, 2, 3, 1).reshape(1, n * n, -1)], dim=1)


@pytest.mark.parametrize("backbone,channels,patch", [("imagenet", 3, 16), ("hpa_sc", 4, 8)])
def test_dino_resizes_positions_as_dinos_code(tmp_path, monkeypatch, backbone, channels, patch):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    cfg = compose_config([f"backbone={backbone}", f"backbone.preprocess.input_size={3 * patch}"]).backbone
    state = random_vit_state(in_chans=channels, patch=patch, img=5 * patch)
    state["pos_embed"] = state["pos_embed"] * 10  # positions that matter
    torch.save(dino_checkpoint(state), tmp_path / cfg.weights)
    bb = build(cfg)
    x = torch.randn(2, channels, 3 * patch, 3 * patch)
    expected = reference_cls({**state, "pos_embed": dino_positions(state["pos_embed"], 3)}, x, num_heads=2)
    with torch.no_grad():
        torch.testing.assert_close(bb(x), expected, atol=1e-4, rtol=1e-4)
    assert bb.identity()["positions"] == {"pos_embed_resize": {"antialias": False, "offset": 0.1}}
