"""Image store codecs: every codec gives back the very pixels written, the store's fingerprints and
embeddings do not depend on it, and stores written with the codec xferlab used before (zarr's
default zstd) still read."""

import json

import lightning as L
import numpy as np
import pandas as pd
import pytest

from xferlab.backbones.channels import NaturalMapping
from xferlab.backbones.preprocess import Preprocessor
from xferlab.backbones.registry import build_backbone
from xferlab.data.codecs import CODECS, DEFAULT_CODEC
from xferlab.data.store import ImageStore, StoreWriter
from xferlab.embeddings.extractor import extract_embeddings


def pixels(n=12, size=16, seed=0):
    """uint16 crops over the whole range (high bytes set too: shuffle must not lose them)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 400, size=(n, 2, size, size))
    images[:, :, :4, :4] = rng.integers(0, 65536, size=(n, 2, 4, 4))
    return images.astype(np.uint16)


def write(path, images, codec):
    n = len(images)
    with StoreWriter(path, n_samples=n, channel_names=["nucleus", "protein"], image_size=images.shape[-2:],
                     dtype=images.dtype, classes=["a", "b"], chunk_rows=5, codec=codec) as writer:
        writer.append(images)
        writer.write_samples(pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "target": "t",
                                           "label": [i % 2 for i in range(n)]}))
    return ImageStore(path, verify="full")


def recorded_codecs(store):
    return [c["name"] for c in json.loads((store.path / "images" / "zarr.json").read_text())["codecs"]]


@pytest.mark.parametrize("codec", list(CODECS))
def test_every_codec_gives_back_the_pixels_and_the_same_fingerprints(tmp_path, codec):
    images = pixels()
    store = write(tmp_path / "s.zarr", images, codec)
    reference = write(tmp_path / "old.zarr", images, "zstd")
    np.testing.assert_array_equal(store.read(0, len(images)), images)
    assert store.images_fingerprint == reference.images_fingerprint and store.fingerprint == reference.fingerprint
    expected = {"none": ["bytes"], "zstd": ["bytes", "zstd"]}.get(codec, ["bytes", "blosc"])
    assert recorded_codecs(store) == expected


def test_the_default_codec_is_blosc_with_byte_shuffle(tmp_path):
    store = write(tmp_path / "s.zarr", pixels(), DEFAULT_CODEC)
    (blosc,) = [c for c in json.loads((store.path / "images" / "zarr.json").read_text())["codecs"]
                if c["name"] == "blosc"]
    assert blosc["configuration"]["shuffle"] == "shuffle" and blosc["configuration"]["typesize"] == 2


def test_an_unknown_codec_is_refused_naming_the_choices(tmp_path):
    with pytest.raises(ValueError, match="unknown image store codec 'lz5'.*blosc-lz4-5"):
        StoreWriter(tmp_path / "s.zarr", n_samples=1, channel_names=["a"], image_size=(4, 4), dtype="uint16",
                    classes=["a"], codec="lz5")
    assert not (tmp_path / "s.zarr").exists()


def test_a_store_in_the_old_codec_gives_bit_identical_embeddings_under_the_same_cache_key(tmp_path):
    images = pixels(n=12, size=16)
    old, new = write(tmp_path / "old.zarr", images, "zstd"), write(tmp_path / "new.zarr", images, DEFAULT_CODEC)
    assert recorded_codecs(old) == ["bytes", "zstd"] and recorded_codecs(new) == ["bytes", "blosc"]
    backbone = build_backbone(name="t", arch="vit_tiny_patch16_224", in_channels=["protein", "nucleus"],
                              init="random", preprocess={"input_size": 16, "normalize": "zscore"},
                              model_kwargs={"img_size": 16, "patch_size": 8, "depth": 1})
    adapter = NaturalMapping("natural", old.channel_names, backbone.in_channels)

    def trainer(**kwargs):
        return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, **kwargs)

    embeddings = [extract_embeddings(store, backbone, adapter, Preprocessor(16, "zscore"), tmp_path / name, trainer,
                                     batch_size=4) for name, store in (("c1", old), ("c2", new))]
    (e_old, info_old), (e_new, info_new) = embeddings
    assert info_old["cache_key"] == info_new["cache_key"]
    np.testing.assert_array_equal(e_old, e_new)


def test_default_chunks_hold_at_most_256_images_and_16_mib(tmp_path):
    from xferlab.data.store import default_chunk_rows

    assert default_chunk_rows(2 * 64 * 64 * 2) == 256  # demo crops: 16 KiB each
    assert default_chunk_rows(2 * 128 * 128 * 2) == 256  # 16 MiB exactly
    assert default_chunk_rows(2 * 224 * 224 * 2) == 64  # 83 would fit: the power of two below
    assert default_chunk_rows(64 * 2**20) == 1  # an image larger than a chunk: one per chunk
    images = pixels(n=12, size=16)
    n = len(images)
    with StoreWriter(tmp_path / "s.zarr", n_samples=n, channel_names=["nucleus", "protein"], image_size=(16, 16),
                     dtype="uint16", classes=["a"], chunk_rows=3) as writer:  # asked for: kept
        writer.append(images)
        writer.write_samples(pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "target": "t", "label": 0}))
    assert ImageStore(tmp_path / "s.zarr").chunk_rows == 3
