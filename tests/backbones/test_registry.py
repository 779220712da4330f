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
    from xferlab.backbones.pixels import PixelBackbone

    bb = PixelBackbone(name="pixels", in_channels=["a", "b"], grid=4, preprocess=PRE)
    x = torch.arange(2 * 2 * 8 * 8, dtype=torch.float32).view(2, 2, 8, 8)
    out = bb(x)
    assert out.shape == (2, 32) == (2, bb.embed_dim)
    assert out[0, 0] == x[0, 0, :2, :2].mean()
    assert bb.features == "pixels" and bb.identity()["model_kwargs"] == {"grid": 4}


def test_weight_sources_and_poolings_are_tables_with_clear_errors():
    from xferlab.backbones.pooling import POOLINGS
    from xferlab.backbones.registry import WEIGHT_SOURCES

    assert set(WEIGHT_SOURCES) == {"random", "weights", "hub"} and set(POOLINGS) == {"cls", "cls_avg", "last4"}
    with pytest.raises(ValueError, match="backbone.init='none'; choose one of"):
        tiny(init="none")
    with pytest.raises(ValueError, match="backbone.features='mean'; choose one of"):
        tiny(features="mean")


def test_last4_is_the_normed_class_token_of_each_of_the_last_four_blocks():
    bb = tiny(features="last4", model_kwargs={**TINY, "depth": 5})
    x = torch.randn(2, 2, 32, 32)
    m, seen = bb.model, []
    hooks = [m.blocks[i].register_forward_hook(lambda mod, inp, out: seen.append(m.norm(out)[:, 0]))
             for i in range(1, 5)]
    out = bb(x)
    for h in hooks:
        h.remove()
    assert out.shape == (2, 4 * 192) == (2, bb.embed_dim)
    torch.testing.assert_close(out, torch.cat(seen, dim=1))
    with pytest.raises(ValueError, match="last4 needs at least 4 blocks"):
        tiny(features="last4")(x)
