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
