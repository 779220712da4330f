import pytest
import torch

from xferlab.backbones.registry import build_backbone
from xferlab.backbones.weights import WeightsError, state_dict_sha256

PRE = {"input_size": 32, "normalize": "zscore"}
TINY = {"img_size": 32, "patch_size": 8, "depth": 1}


def tiny(init="random", **kw):
    args = dict(name="t", arch="vit_tiny_patch16_224", in_channels=["nucleus", "protein"], init=init,
                preprocess=PRE, model_kwargs=TINY)
    args.update(kw)
    return build_backbone(**args)


def test_random_init_is_seeded_and_frozen():
    a, b, c = tiny(init_seed=0), tiny(init_seed=0), tiny(init_seed=1)
    assert a.weights_sha256 == b.weights_sha256 != c.weights_sha256
    assert not any(p.requires_grad for p in a.parameters())
    assert not a.training
    out = a(torch.randn(3, 2, 32, 32))
    assert out.shape == (3, a.embed_dim) == (3, 192)


def test_cls_avg_features_double_the_width():
    bb = tiny(features="cls_avg")
    x = torch.randn(2, 2, 32, 32)
    out = bb(x)
    tokens = bb.model.forward_features(x)
    torch.testing.assert_close(out[:, :192], tokens[:, 0])
    torch.testing.assert_close(out[:, 192:], tokens[:, 1:].mean(1))


def test_weights_file_loads_strictly_and_is_fingerprinted(tmp_path):
    source = tiny(init_seed=7)
    path = tmp_path / "w.pth"
    torch.save(source.model.state_dict(), path)
    loaded = tiny(init="weights", weights=str(path))
    assert loaded.weights_sha256 == source.weights_sha256
    assert state_dict_sha256(loaded.model) == state_dict_sha256(source.model)


def test_weights_file_with_missing_keys_is_an_error_listing_them(tmp_path):
    state = tiny().model.state_dict()
    del state["cls_token"]
    path = tmp_path / "w.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match="missing \\['cls_token'\\]"):
        tiny(init="weights", weights=str(path))


def test_no_silent_random_weights():
    with pytest.raises(WeightsError, match="needs a weights file"):
        tiny(init="weights", weights=None)
    with pytest.raises(WeightsError, match="no such file"):
        tiny(init="weights", weights="/nonexistent/w.pth")
    with pytest.raises(ValueError, match="init=random but backbone.weights"):
        tiny(init="random", weights="/some/file.pth")


def test_unknown_architecture_is_an_error():
    with pytest.raises(ValueError, match="not a timm model"):
        tiny(arch="vit_nonexistent_model")


def test_pixel_baseline_pools_pixels():
    bb = build_backbone(name="pixels", arch="pixels", in_channels=["a", "b"], init="none",
                        preprocess=PRE, model_kwargs={"grid": 4})
    x = torch.arange(2 * 2 * 8 * 8, dtype=torch.float32).view(2, 2, 8, 8)
    out = bb(x)
    assert out.shape == (2, 32) == (2, bb.embed_dim)
    assert out[0, 0] == x[0, 0, :2, :2].mean()
