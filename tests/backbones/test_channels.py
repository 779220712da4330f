import pytest
import torch

from xferlab.backbones.channels import NaturalMapping, Replicate


def image():
    # channel c of sample b holds the value 10*b + c + 1 everywhere
    return torch.stack([torch.stack([torch.full((2, 2), 10.0 * b + c + 1) for c in range(2)]) for b in range(3)])


def test_natural_mapping_by_name_fills_slots_and_zeros_the_rest():
    adapter = NaturalMapping("natural", ["nucleus", "protein"], ["nucleus", "protein", "microtubules", "er"])
    out = adapter(image())
    assert out.shape == (3, 4, 2, 2)
    assert adapter.sources == [0, 1, None, None]
    for b in range(3):
        assert out[b, 0].eq(10 * b + 1).all() and out[b, 1].eq(10 * b + 2).all()
        assert out[b, 2].eq(0).all() and out[b, 3].eq(0).all()


def test_natural_mapping_to_rgb_uses_the_colour_map():
    adapter = NaturalMapping("natural", ["nucleus", "protein"], ["red", "green", "blue"],
                             colour_map={"protein": "green", "nucleus": "blue"})
    out = adapter(image())
    assert adapter.sources == [None, 1, 0]
    assert out[1, 0].eq(0).all() and out[1, 1].eq(12).all() and out[1, 2].eq(11).all()


def test_natural_mapping_with_nothing_in_common_is_an_error():
    with pytest.raises(ValueError, match="none of the dataset channels"):
        NaturalMapping("natural", ["nucleus", "protein"], ["red", "green", "blue"], colour_map={})


def test_replicate_copies_one_channel_everywhere():
    adapter = Replicate("replicate", ["nucleus", "protein"], ["red", "green", "blue"], channel="protein")
    out = adapter(image())
    assert all(out[2, k].eq(22).all() for k in range(3))
    with pytest.raises(ValueError, match="not a dataset channel"):
        Replicate("replicate", ["nucleus", "protein"], ["r"], channel="dapi")


def test_wrong_channel_count_is_an_error():
    adapter = NaturalMapping("natural", ["nucleus", "protein"], ["nucleus", "protein"])
    with pytest.raises(ValueError, match="3 channels"):
        adapter(torch.zeros(1, 3, 2, 2))


def test_description_names_the_mapping():
    d = NaturalMapping("natural", ["nucleus", "protein"], ["protein", "nucleus"]).describe()
    assert d["strategy"] == "natural" and d["sources"] == [1, 0]


def test_random_order_is_a_seeded_permutation_into_the_slots():
    from xferlab.backbones.channels import RandomOrder

    slots = ["nucleus", "protein", "microtubules", "er"]
    a = RandomOrder("random_order", ["nucleus", "protein"], slots, seed=0)
    b = RandomOrder("random_order", ["nucleus", "protein"], slots, seed=0)
    assert a.sources == b.sources
    assert sorted(s for s in a.sources if s is not None) == [0, 1] and a.sources.count(None) == 2
    layouts = {tuple(RandomOrder("r", ["nucleus", "protein"], slots, seed=s).sources) for s in range(20)}
    assert len(layouts) > 3  # the seed changes the order
    out = a(image())
    for k, s in enumerate(a.sources):
        expected = 0.0 if s is None else 10.0 * 1 + s + 1
        assert out[1, k].eq(expected).all()
    assert a.describe()["seed"] == 0


def test_channelwise_gives_one_replicated_view_per_channel():
    from xferlab.backbones.channels import Channelwise

    adapter = Channelwise("channelwise", ["nucleus", "protein"], ["red", "green", "blue"])
    views = adapter.views(image())
    assert adapter.n_views == 2 and len(views) == 2
    for c, view in enumerate(views):
        assert view.shape == (3, 3, 2, 2)
        for b in range(3):
            assert all(view[b, k].eq(10 * b + c + 1).all() for k in range(3))


def test_channelwise_embeddings_are_concatenated_per_channel():
    from xferlab.backbones.channels import Channelwise
    from xferlab.backbones.preprocess import Preprocessor
    from xferlab.backbones.registry import build_backbone
    from xferlab.embeddings.extractor import EmbeddingExtractor

    bb = build_backbone(name="t", arch="vit_tiny_patch16_224", in_channels=["a", "b", "c"], init="random",
                        preprocess={}, model_kwargs={"img_size": 16, "patch_size": 8, "depth": 1})
    adapter = Channelwise("channelwise", ["nucleus", "protein"], bb.in_channels)
    pre = Preprocessor(None, "zscore")
    images = torch.rand(2, 2, 16, 16) * 100
    _, emb = EmbeddingExtractor(bb, pre, adapter).predict_step((torch.arange(2), images), 0)
    assert emb.shape == (2, 2 * bb.embed_dim)
    z = (images - images.mean((2, 3), keepdim=True)) / (images.std((2, 3), keepdim=True, unbiased=False) + 1e-6)
    with torch.no_grad():
        protein_only = bb(z[:, 1:2].expand(-1, 3, -1, -1))
    torch.testing.assert_close(emb[:, bb.embed_dim :], protein_only, rtol=1e-5, atol=1e-5)
