import numpy as np
import pytest
import torch

from xferlab.backbones.preprocess import Preprocessor


def identity(x):
    return x


def test_zscore_normalises_each_image_and_channel():
    x = torch.rand(4, 2, 16, 16) * torch.tensor([1.0, 500.0]).view(1, 2, 1, 1) + 7
    out = Preprocessor(None, "zscore")(x, identity)
    torch.testing.assert_close(out.mean(dim=(2, 3)), torch.zeros(4, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=(2, 3), unbiased=False), torch.ones(4, 2), atol=1e-4, rtol=0)


def test_constant_channel_becomes_zero_not_nan():
    x = torch.full((1, 2, 8, 8), 300.0)
    out = Preprocessor(None, "zscore")(x, identity)
    assert torch.isfinite(out).all() and out.eq(0).all()


def test_resize_to_the_input_size():
    out = Preprocessor(32, "zscore")(torch.rand(2, 2, 64, 64), identity)
    assert out.shape == (2, 2, 32, 32)


def test_dataset_and_backbone_normalisation():
    x = torch.full((1, 2, 4, 4), 100.0)
    out = Preprocessor(None, "dataset", dataset_mean=[50, 100], dataset_std=[25, 10])(x, identity)
    assert out[0, 0].allclose(torch.tensor(2.0)) and out[0, 1].abs().max() < 1e-4
    pre = Preprocessor(None, "backbone", mean=[0.5, 0.25], std=[0.5, 0.25], dtype_max=200.0)
    out = pre(x, identity)  # x / 200 = 0.5
    assert out[0, 0].abs().max() < 1e-6 and out[0, 1].allclose(torch.tensor(1.0))


def test_backbone_normalisation_needs_mean_and_std():
    with pytest.raises(ValueError, match="mean and .std"):
        Preprocessor(None, "backbone")
    with pytest.raises(ValueError, match="choose one of"):
        Preprocessor(None, "minmax")


def test_backbone_normalisation_refuses_float_pixels_outside_zero_one(tmp_path):
    """`normalize=backbone` scales integer pixels by their dtype's range but reads float pixels as
    [0, 1]: a float store holding raw intensities would reach the backbone unscaled."""
    from tests.conftest import write_store

    config = {"input_size": 16, "normalize": "backbone", "mean": [0.5, 0.5], "std": [0.25, 0.25]}
    raw = write_store(tmp_path / "raw.zarr", dtype="float32")  # values 0..999, as imported
    with pytest.raises(ValueError, match="expects float pixels in \\[0, 1\\]") as err:
        Preprocessor.for_store(config, raw)
    assert str(raw.path) in str(err.value) and "normalize=zscore" in str(err.value)
    assert Preprocessor.for_store({**config, "normalize": "zscore"}, raw).normalize == "zscore"
    assert Preprocessor.for_store(config, write_store(tmp_path / "int.zarr")).dtype_max == 65535  # uint16
    # float pixels in [0, 1] pass, even with the most spread such values can have (half 0, half 1)
    unit = write_store(tmp_path / "unit.zarr", dtype="float32")
    unit.channel_mean, unit.channel_std = np.array([0.5, 0.2]), np.array([0.5, 0.1])
    assert Preprocessor.for_store(config, unit).dtype_max == 1.0
