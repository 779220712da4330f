"""OpenPhenom (channel-agnostic CA-MAE): a file in the released layout (the whole autoencoder:
timm encoder under `encoder.vit_backbone.`, decoder beside it), written here from a small timm
ViT of the same structure, loads strictly and gives the embedding of a plain reference forward,
for any number of channels."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.models.vision_transformer import ParallelScalingBlock

from tests.conftest import compose_config
from xferlab.backbones.weights import WeightsError
from xferlab.runtime.building import build

DIM, PATCH, GRID, MAX_CHANNELS = 128, 8, 4, 6


def small_encoder(avg_pool: bool, seed: int = 0):
    """A timm ViT with OpenPhenom's block structure (parallel scaling, QK norm, layer scale, no qkv
    bias), a single-channel patch projection and random weights."""
    torch.manual_seed(seed)
    vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, in_chans=1,
                            img_size=GRID * PATCH, patch_size=PATCH, embed_dim=DIM, depth=2, num_heads=2,
                            class_token=True, init_values=1e-4, block_fn=ParallelScalingBlock, qkv_bias=False,
                            qk_norm=True, fc_norm=None, global_pool="avg" if avg_pool else "token")
    with torch.no_grad():
        for name, p in vit.named_parameters():
            p.add_(torch.randn_like(p) * (0.5 if "gamma" in name else 0.02))
    state = {k: v.clone() for k, v in vit.state_dict().items()}
    state["pos_embed"] = torch.randn(1, 1 + MAX_CHANNELS * GRID * GRID, DIM) * 0.1  # one grid per channel
    return vit, state


def released_file(path, avg_pool: bool = True, extra: dict | None = None):
    vit, encoder = small_encoder(avg_pool)
    state = {f"encoder.vit_backbone.{k}": v for k, v in encoder.items()}
    state.update({"decoder.blocks.0.norm1.weight": torch.ones(64), "decoder.mask_token": torch.zeros(1, 1, 64),
                  "encoder_decoder_proj.weight": torch.zeros(64, DIM), "decoder_pred.weight": torch.zeros(64, 64)})
    state.update(extra or {})
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return vit, encoder


def reference(vit, encoder: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """OpenPhenom's predict from the parts: instance norm, every channel through the one projection,
    class token, position embeddings of the first 1 + C x grid^2 tokens, the blocks, the mean patch token."""
    x = F.instance_norm(images, eps=1e-5)
    per_channel = [F.conv2d(x[:, c:c + 1], encoder["patch_embed.proj.weight"], encoder["patch_embed.proj.bias"],
                            stride=PATCH).flatten(2).transpose(1, 2) for c in range(x.shape[1])]
    tokens = torch.cat([encoder["cls_token"].expand(len(x), -1, -1), *per_channel], dim=1)
    tokens = tokens + encoder["pos_embed"][:, :tokens.shape[1]]
    for block in vit.blocks:
        tokens = block(tokens)
    tokens = vit.norm(tokens)
    return tokens[:, 1:].mean(dim=1)


def config(*extra: str):
    return compose_config(["backbone=openphenom", f"backbone.preprocess.input_size={GRID * PATCH}", *extra]).backbone


@pytest.mark.parametrize("avg_pool", [True, False])
@pytest.mark.parametrize("channels", [["nucleus", "protein"], ["nucleus", "protein", "er", "microtubules", "x"]])
def test_released_layout_loads_strictly_and_matches_the_reference(tmp_path, monkeypatch, avg_pool, channels):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    vit, encoder = released_file(tmp_path / "OpenPhenom.safetensors", avg_pool)
    bb = build(config(f"backbone.in_channels=[{','.join(channels)}]"))
    assert bb.model.max_channels == MAX_CHANNELS and bb.embed_dim == DIM
    images = torch.rand(3, len(channels), GRID * PATCH, GRID * PATCH) * 500
    vit.eval()
    with torch.no_grad():
        torch.testing.assert_close(bb(images), reference(vit, encoder, images), atol=1e-4, rtol=1e-4)
        bb.features = "channelwise"
        out = bb(images)
    assert out.shape == (3, DIM * len(channels)) == (3, bb.embed_dim)
    assert not torch.allclose(out[:, :DIM], out[:, DIM:2 * DIM])  # one mean per channel, in order


def test_channel_order_matters_and_more_channels_than_the_model_takes_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    released_file(tmp_path / "OpenPhenom.safetensors")
    bb = build(config())
    x = torch.rand(2, 2, GRID * PATCH, GRID * PATCH)
    with torch.no_grad():
        assert not torch.allclose(bb(x), bb(x.flip(1)))  # the position embeddings differ per channel slot
    with pytest.raises(WeightsError, match="embeds at most 6 channels"):
        build(config("backbone.in_channels=[a,b,c,d,e,f,g]"))


@pytest.mark.parametrize("extra,match", [
    ({"classifier.weight": torch.zeros(2, 2)}, r"unexpected keys outside the encoder .* \['classifier.weight'\]"),
    ({"encoder.vit_backbone.extra": torch.zeros(1)}, r"unexpected \['extra'\]"),
])
def test_keys_beyond_the_encoder_and_its_decoder_are_refused(tmp_path, monkeypatch, extra, match):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    released_file(tmp_path / "OpenPhenom.safetensors", extra=extra)
    with pytest.raises(WeightsError, match=match):
        build(config())


def test_an_input_size_other_than_the_models_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    released_file(tmp_path / "OpenPhenom.safetensors")
    with pytest.raises(WeightsError, match="not a whole number of 3 x 3 grids"):
        build(config(f"backbone.preprocess.input_size={3 * PATCH}"))
