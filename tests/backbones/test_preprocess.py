import functools

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


IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def test_percentile_stretch_maps_each_image_and_channels_percentiles_to_zero_and_one():
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 300.0, size=(3, 2, 20, 24)) * np.array([1.0, 40.0]).reshape(1, 2, 1, 1) + 250
    pre = Preprocessor(None, "backbone", mean=[0, 0], std=[1, 1], dtype_max=65535.0, intensity="percentile",
                       percentiles=[2, 98])
    out = pre(torch.from_numpy(x.astype(np.float32)), identity).numpy()
    lo, hi = np.percentile(x, [2, 98], axis=(2, 3), keepdims=True)
    expected = np.clip((x - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert out.min() == 0 and out.max() == 1


def test_minmax_and_dtype_intensities_and_constant_channels():
    x = torch.tensor([[[[100.0, 300.0], [500.0, 900.0]], [[7.0, 7.0], [7.0, 7.0]]]])
    minmax = Preprocessor(None, "backbone", mean=[0, 0], std=[1, 1], dtype_max=1000.0, intensity="minmax")(x, identity)
    torch.testing.assert_close(minmax[0, 0], (x[0, 0] - 100) / 800)
    assert minmax[0, 1].eq(0).all()  # a constant channel is 0, not NaN
    dtype = Preprocessor(None, "backbone", mean=[0, 0], std=[1, 1], dtype_max=1000.0, intensity="dtype")(x, identity)
    torch.testing.assert_close(dtype, x / 1000)


def test_minmax_stack_is_subcellportables_one_minimum_and_maximum_per_cell_stack():
    """SubCellPortable (inference.py, `min_max_standardize`): the uint16 channel images of a cell
    stacked, as float, `(x - amin over channels and pixels) / (amax - amin + 1e-6)`; written here
    in numpy from that arithmetic."""
    rng = np.random.default_rng(0)
    raw = np.stack([rng.integers(300, 9000, size=(2, 16, 16)), rng.integers(120, 2500, size=(2, 16, 16))],
                   axis=1).astype(np.uint16)  # (cells, channels: nucleus, protein, H, W); dim protein
    stack = raw.astype(np.float32)
    lo = stack.min(axis=(1, 2, 3), keepdims=True)
    hi = stack.max(axis=(1, 2, 3), keepdims=True)
    expected = (stack - lo) / (hi - lo + np.float32(1e-6))
    pre = Preprocessor(None, "backbone", mean=[0, 0], std=[1, 1], dtype_max=65535.0, intensity="minmax_stack")
    out = pre(torch.from_numpy(raw.astype(np.int32)), identity)
    torch.testing.assert_close(out, torch.from_numpy(expected), atol=1e-7, rtol=0)
    assert float(out[:, 1].amax()) < 0.5  # the dim channel stays dim: not stretched on its own
    per_channel = Preprocessor(None, "backbone", mean=[0, 0], std=[1, 1], dtype_max=65535.0, intensity="minmax")
    assert float(per_channel(torch.from_numpy(raw.astype(np.int32)), identity)[:, 1].amax()) == 1.0
    constant = pre(torch.full((1, 2, 4, 4), 700.0), identity)
    assert constant.eq(0).all()  # (x - min) / 1e-6 = 0, not NaN


def test_by255_divides_integer_pixels_by_255_whatever_their_dtype_and_reads_floats_as_they_are():
    """OpenPhenom's `Normalizer`: `pixels.float() / 255`, for 8-bit and camera counts alike."""
    x = torch.tensor([[[[0.0, 255.0], [510.0, 4000.0]]]])
    for dtype_max in (255.0, 65535.0):
        out = Preprocessor(None, "backbone", mean=[0], std=[1], dtype_max=dtype_max, intensity="by255")(x, identity)
        torch.testing.assert_close(out, x / 255)
    unit = torch.rand(1, 1, 4, 4)
    out = Preprocessor(None, "backbone", mean=[0], std=[1], dtype_max=1.0, intensity="by255")(unit, identity)
    torch.testing.assert_close(out, unit)


@pytest.mark.parametrize("kwargs,message", [
    ({"normalize": "zscore", "intensity": "percentile"}, "apply only to normalize=backbone"),
    ({"normalize": "backbone", "intensity": "quantile", **IMAGENET}, "choose one of"),
    ({"normalize": "backbone", "intensity": "percentile", "percentiles": [99, 1], **IMAGENET}, "0 <= low < high"),
    ({"normalize": "backbone", "intensity": "minmax", "percentiles": [1, 99], **IMAGENET}, "intensity=percentile only"),
])
def test_bad_intensity_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Preprocessor(224, **kwargs)


def test_intensity_is_part_of_the_cache_identity_and_older_keys_stay():
    dtype = Preprocessor(224, "backbone", dtype_max=65535.0, **IMAGENET).describe()
    assert "intensity" not in dtype and "percentiles" not in dtype  # as before intensities existed
    stretched = Preprocessor(224, "backbone", dtype_max=65535.0, intensity="percentile", **IMAGENET).describe()
    other = Preprocessor(224, "backbone", dtype_max=65535.0, intensity="percentile", percentiles=[0.5, 99.5],
                         **IMAGENET).describe()
    minmax = Preprocessor(224, "backbone", dtype_max=65535.0, intensity="minmax", **IMAGENET).describe()
    stack = Preprocessor(224, "backbone", dtype_max=65535.0, intensity="minmax_stack", **IMAGENET).describe()
    by255 = Preprocessor(224, "backbone", dtype_max=65535.0, intensity="by255", **IMAGENET).describe()
    assert len({str(d) for d in (dtype, stretched, other, minmax, stack, by255)}) == 6
    assert Preprocessor(64, "zscore").describe() == {"input_size": 64, "normalize": "zscore"}


@pytest.mark.parametrize("config", [{"normalize": "zscore"}, {"normalize": "backbone", "intensity": "percentile",
                                                                "mean": [0.2, 0.3], "std": [0.5, 0.6]}])
def test_pretraining_prepares_images_exactly_as_extraction_does(tmp_path, config):
    """One implementation: DINO pretraining's inputs are the extraction inputs at the store's size."""
    from tests.conftest import write_store

    store = write_store(tmp_path / "s.zarr", size=16)
    images = store.read(0, len(store))
    pre = Preprocessor.for_store({"input_size": 16, **config}, store)
    torch.testing.assert_close(pre.pretraining_inputs(images), pre(torch.from_numpy(images.astype(np.float32)), identity))


@functools.lru_cache(maxsize=1)
def real_crops(per_field: int = 8, size: int = 64) -> torch.Tensor:
    """Nucleus-centred crops of the real OpenCell Hoechst fields, paired with a protein channel,
    cut and stored as `opencell_raw` does (uint16 camera counts)."""
    from tests.real_data import hoechst_fields, with_protein
    from xferlab.data.importers.common import resize_image, to_uint16
    from xferlab.data.importers.crop_rules import CropRule
    from xferlab.data.importers.opencell_raw import crop_centres, cut

    fields = hoechst_fields()
    crops = [to_uint16(resize_image(cut(with_protein(fields, name), centre, 200), size))
             for name in sorted(fields) for centre in crop_centres(fields[name], 200, CropRule(per_field), field=name)]
    return torch.from_numpy(np.stack(crops).astype(np.float32))


def test_on_real_opencell_crops_the_imagenet_input_uses_its_dynamic_range():
    """Camera counts divided by 65,535 leave the [0, 1] input range nearly unused (and the ImageNet
    arm sees near-black images); the percentile stretch fills it, image by image."""
    from xferlab.backbones.channels import NaturalMapping

    x = real_crops()
    adapter = NaturalMapping("natural", ["nucleus", "protein"], ["red", "green", "blue"],
                             {"protein": "green", "nucleus": "blue"})
    dtype = Preprocessor(None, "backbone", dtype_max=65535.0, intensity="dtype", **IMAGENET)
    stretch = Preprocessor(None, "backbone", dtype_max=65535.0, intensity="percentile", **IMAGENET)
    raw_span = (x.amax(dim=(2, 3)) - x.amin(dim=(2, 3))) / 65535.0
    unit_dtype, unit_stretch = dtype.intensities(x), stretch.intensities(x)
    torch.testing.assert_close(unit_dtype.amax(dim=(2, 3)) - unit_dtype.amin(dim=(2, 3)), raw_span)
    assert (raw_span < 0.5).all()  # real camera counts: most of the range unused
    assert (unit_stretch.amin(dim=(2, 3)) == 0).all() and (unit_stretch.amax(dim=(2, 3)) == 1).all()
    # the images differ from one another in what the backbone sees: per-image spread far above dtype scaling's
    ratio = unit_stretch.std(dim=(2, 3)) / unit_dtype.std(dim=(2, 3))
    assert (ratio > 1 / raw_span.amax()).all()
    # after the ImageNet statistics, dtype scaling puts every pixel near the normalised black level
    black = -torch.tensor(IMAGENET["mean"]) / torch.tensor(IMAGENET["std"])
    near_black = dtype(x, adapter)[:, 2] - black[2]
    assert near_black.abs().mean() < stretch(x, adapter)[:, 2].sub(black[2]).abs().mean() / 2


def test_on_real_opencell_crops_the_stretch_spreads_a_vits_embeddings():
    """A ViT with random weights (the real ones cannot be downloaded here): images scaled by the
    dtype's range all look alike to it (mean pairwise cosine similarity near 1); stretched, they do not."""
    import timm

    from xferlab.backbones.channels import NaturalMapping

    x = real_crops()
    adapter = NaturalMapping("natural", ["nucleus", "protein"], ["red", "green", "blue"],
                             {"protein": "green", "nucleus": "blue"})
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=64, depth=4).eval()

    def spread(intensity: str) -> float:
        pre = Preprocessor(64, "backbone", dtype_max=65535.0, intensity=intensity, **IMAGENET)
        with torch.no_grad():
            e = torch.nn.functional.normalize(model.forward_features(pre(x, adapter))[:, 0], dim=1)
        cos = (e @ e.T)[~torch.eye(len(e), dtype=torch.bool)]
        return 1.0 - float(cos.mean())

    assert spread("percentile") > 10 * spread("dtype")


class FakeStore:
    """What `Preprocessor.for_store` reads of a store."""

    def __init__(self, pixel_size_um, size=32, dtype=np.uint16):
        self.pixel_size_um, self.path = pixel_size_um, "fake.zarr"
        self.images = np.zeros((1, 2, size, size), dtype=dtype)
        self.channel_mean, self.channel_std = np.zeros(2), np.ones(2)
        self.channel_names = ["nucleus", "protein"]


def test_scale_match_resamples_to_the_pretraining_pixel_size_then_crops_or_pads():
    from xferlab.backbones.preprocess import fit

    x = torch.rand(2, 2, 32, 32) * 1000
    # 0.4 um per store pixel, pretrained at 0.2: twice as many pixels (64), centre 48 kept
    crop = Preprocessor.for_store({"input_size": 48, "normalize": "zscore", "scale": "match",
                                   "pretrained_pixel_size_um": 0.2}, FakeStore(0.4))
    up = torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
    expected = fit(Preprocessor(None, "zscore").intensities(up), 48)
    torch.testing.assert_close(crop(x, identity), expected)
    torch.testing.assert_close(expected, Preprocessor(None, "zscore").intensities(up)[:, :, 8:56, 8:56])
    # pretrained at 0.8: half as many pixels (16), padded to 48 with zeros around the image
    pad = Preprocessor.for_store({"input_size": 48, "normalize": "zscore", "scale": "match",
                                  "pretrained_pixel_size_um": 0.8}, FakeStore(0.4))(x, identity)
    assert pad.shape == (2, 2, 48, 48) and pad[:, :, :16].eq(0).all() and pad[:, :, :, 32:].eq(0).all()
    assert pad[:, :, 16:32, 16:32].std() > 0.5
    # the cache identity says so; resize keeps the keys it had before scales existed
    described = Preprocessor.for_store({"input_size": 48, "normalize": "zscore", "scale": "match",
                                        "pretrained_pixel_size_um": 0.2}, FakeStore(0.4)).describe()
    assert described["scale"] == "match" and described["pixel_size_um"] == 0.4
    assert Preprocessor.for_store({"input_size": 48, "normalize": "zscore"}, FakeStore(0.4)).describe() == \
        {"input_size": 48, "normalize": "zscore"}


@pytest.mark.parametrize("store_px,config,missing", [
    (None, {"pretrained_pixel_size_um": 0.2}, "dataset.pixel_size_um"),
    (0.4, {}, "pretrained_pixel_size_um"),
])
def test_scale_match_without_a_pixel_size_is_refused_naming_it(store_px, config, missing):
    with pytest.raises(ValueError, match=missing):
        Preprocessor.for_store({"input_size": 48, "normalize": "zscore", "scale": "match", **config},
                               FakeStore(store_px))


def test_far_from_pretraining_pixel_or_input_size_is_warned(caplog):
    from xferlab.backbones.preprocess import FAR, scale_warnings

    # 128 px of 0.2 um resized to 64: 0.4 um per input pixel
    assert scale_warnings(64, 128, 0.2, "resize", 0.4, 64) == []
    far = scale_warnings(64, 128, 0.2, "resize", 0.4 / (FAR * 1.1), 64 * FAR * 1.1)
    assert len(far) == 2 and "scale=match" in far[0] and "input size 64" in far[1]
    assert scale_warnings(64, 128, None, "resize", 0.4, None) == []  # unknown pixel size: nothing to compare
    with caplog.at_level("WARNING"):
        Preprocessor.for_store({"input_size": 224, "normalize": "zscore", "pretrained_input_size": 64,
                                "pretrained_pixel_size_um": 0.4}, FakeStore(0.2, size=32))
    assert sum("fake.zarr" in r.getMessage() for r in caplog.records) == 2


def test_checkpoint_scale_fills_what_the_config_leaves_open():
    from xferlab.backbones.preprocess import with_checkpoint_scale

    meta = {"input_pixel_size_um": 0.5, "input_size": 48}
    assert with_checkpoint_scale({"pretrained_pixel_size_um": None}, meta) == \
        {"pretrained_pixel_size_um": 0.5, "pretrained_input_size": 48}
    assert with_checkpoint_scale({"pretrained_pixel_size_um": 0.3, "pretrained_input_size": 64}, meta) == \
        {"pretrained_pixel_size_um": 0.3, "pretrained_input_size": 64}
    assert with_checkpoint_scale({"input_size": 8}, {}) == {"input_size": 8}


def test_fit_tiles_covers_the_whole_matched_image_and_centre_says_what_it_drops(caplog):
    """scale=match on an image larger than the input: `tiles` gives the fewest input-size tiles
    that, put back at their offsets, rebuild the whole resampled image; `centre` gives its centre
    and warns with the share it drops."""
    from xferlab.backbones.geometry import tile_starts

    x = torch.rand(3, 2, 50, 50) * 1000
    config = {"input_size": 32, "normalize": "zscore", "scale": "match", "pretrained_pixel_size_um": 0.4}
    tiles = Preprocessor.for_store({**config, "fit": "tiles"}, FakeStore(0.8, size=50))
    whole = Preprocessor(None, "zscore").intensities(
        torch.nn.functional.interpolate(x, size=(100, 100), mode="bilinear", antialias=True, align_corners=False))
    (views,) = tiles.views(x, lambda v: [v])
    starts = tile_starts(100, 32)
    assert starts == [0, 23, 45, 68] and views.shape == (3 * 16, 2, 32, 32) and tiles.inputs_per_image(50) == 16
    rebuilt, covered = torch.zeros_like(whole), torch.zeros(100, 100, dtype=torch.bool)
    for i, (y, left) in enumerate((y, left) for y in starts for left in starts):
        rebuilt[:, :, y : y + 32, left : left + 32] = views[i::16]  # image-major: image b's tiles are rows 16b..16b+15
        covered[y : y + 32, left : left + 32] = True
    assert covered.all()
    torch.testing.assert_close(rebuilt, whole)
    assert tiles.describe()["fit"] == "tiles"
    with caplog.at_level("WARNING"):
        centre = Preprocessor.for_store(config, FakeStore(0.8, size=50))
    assert "fit" not in centre.describe()  # the default keeps the cache keys it had
    torch.testing.assert_close(centre(x, identity), whole[:, :, 34:66, 34:66])
    assert any("only the central 32 x 32 px of each image resampled to 100 px" in r.getMessage() and
               "10.2 % of its area" in r.getMessage() and "fit=tiles" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="fit=tiles gives 16 inputs per image"):
        tiles(x, identity)  # one input per image (heads that train on images) cannot take tiles
    with pytest.raises(ValueError, match="fit=tiles covers an image resampled by scale=match"):
        Preprocessor(32, "zscore", fit="tiles")
    with pytest.raises(ValueError, match="fit='corner'"):
        Preprocessor(32, "zscore", scale="match", pixel_size_um=0.8, pretrained_pixel_size_um=0.4, fit="corner")


def test_match_warns_when_it_interpolates_far_finer_than_the_stored_pixels(caplog):
    config = {"input_size": 64, "normalize": "zscore", "scale": "match", "pretrained_pixel_size_um": 0.1}
    with caplog.at_level("WARNING"):
        Preprocessor.for_store(config, FakeStore(0.3, size=16))  # 3x finer: 48 px, padded, all seen
    (note,) = [r.getMessage() for r in caplog.records]
    assert "3x finer: the backbone sees interpolated pixels" in note and "dataset.size" in note
