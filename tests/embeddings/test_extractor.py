import lightning as L
import numpy as np
import torch

from tests.conftest import write_store
from xferlab.backbones.channels import NaturalMapping
from xferlab.backbones.preprocess import Preprocessor
from xferlab.backbones.registry import build_backbone
from xferlab.embeddings.extractor import extract_embeddings


def make_trainer(**kwargs):
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, enable_checkpointing=False, **kwargs)


def test_extraction_equals_a_direct_forward_pass_and_is_cached(tmp_path):
    store = write_store(tmp_path / "s.zarr", n_per_class=5, size=16)  # 20 images
    backbone = build_backbone(name="t", arch="vit_tiny_patch16_224", in_channels=["protein", "nucleus"],
                              init="random", preprocess={"input_size": 16, "normalize": "zscore"},
                              model_kwargs={"img_size": 16, "patch_size": 8, "depth": 1})
    adapter = NaturalMapping("natural", store.channel_names, backbone.in_channels)
    pre = Preprocessor(16, "zscore")
    emb, info = extract_embeddings(store, backbone, adapter, pre, tmp_path / "cache", make_trainer, batch_size=6)
    assert info["cache_hit"] is False
    assert emb.shape == (20, 192)

    images = torch.from_numpy(store.read(0, 20).astype(np.float32))
    x = (images - images.mean((2, 3), keepdim=True)) / (images.std((2, 3), keepdim=True, unbiased=False) + 1e-6)
    x = x[:, [1, 0]]  # backbone slots are (protein, nucleus)
    with torch.no_grad():
        expected = backbone.model.forward_features(x)[:, 0]
    np.testing.assert_allclose(emb, expected.numpy(), rtol=1e-4, atol=1e-4)

    again, info2 = extract_embeddings(store, backbone, adapter, pre, tmp_path / "cache", make_trainer, batch_size=6)
    assert info2["cache_hit"] is True and info2["cache_key"] == info["cache_key"]
    np.testing.assert_array_equal(again, emb)
