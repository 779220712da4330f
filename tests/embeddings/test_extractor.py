import lightning as L
import numpy as np
import pytest
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



def _extract_after_barrier(store_path, backbone, cache_root, barrier, results):
    """One of several workers that need the same cache entry at the same moment."""
    import time

    from xferlab.data.store import ImageStore

    store = ImageStore(store_path)
    adapter = NaturalMapping("natural", store.channel_names, backbone.in_channels)

    def slow_trainer(**kwargs):  # the builder holds the lock long enough for the others to queue up
        time.sleep(2.0)
        return make_trainer(**kwargs)

    barrier.wait()
    emb, info = extract_embeddings(store, backbone, adapter, Preprocessor(16, "zscore"), cache_root, slow_trainer,
                                   batch_size=6)
    results.put((info, float(np.asarray(emb, dtype=np.float64).sum())))


@pytest.mark.parametrize("workers", ["threads", pytest.param("processes", marks=pytest.mark.slow)])
def test_concurrent_builders_extract_an_entry_once_and_the_others_wait_for_it(tmp_path, workers):
    """The file lock: threads hold separate lock-file descriptors, exactly as separate processes do
    (multirun jobs); the process variant is the real thing but spends ~15 s per process importing torch."""
    import multiprocessing as mp
    import queue
    import threading

    store = write_store(tmp_path / "s.zarr", n_per_class=5, size=16)
    backbone = build_backbone(name="t", arch="vit_tiny_patch16_224", in_channels=["protein", "nucleus"],
                              init="random", preprocess={"input_size": 16, "normalize": "zscore"},
                              model_kwargs={"img_size": 16, "patch_size": 8, "depth": 1})
    n = 3
    if workers == "threads":
        barrier, results, make = threading.Barrier(n), queue.Queue(), threading.Thread
    else:
        ctx = mp.get_context("spawn")
        barrier, results, make = ctx.Barrier(n), ctx.Queue(), ctx.Process
    runners = [make(target=_extract_after_barrier, args=(store.path, backbone, tmp_path / "cache", barrier, results))
               for _ in range(n)]
    for r in runners:
        r.start()
    got = [results.get(timeout=300) for _ in range(n)]
    for r in runners:
        r.join(timeout=60)
    infos = [info for info, _ in got]
    assert sorted(info["cache_hit"] for info in infos) == [False] + [True] * (n - 1)  # built once
    # every worker found the entry missing and queued on the lock; those that did not build it
    # waited there for the builder (>= its 2 s) and then read its entry
    assert all("lock_wait_seconds" in info for info in infos)
    assert len({info["cache_key"] for info in infos}) == 1 and len({s for _, s in got}) == 1
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [f"{infos[0]['cache_key']}.zarr",
                                                                      f"{infos[0]['cache_key']}.zarr.lock"]
