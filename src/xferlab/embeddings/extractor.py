"""Embedding extraction: a LightningModule whose `predict_step` runs the frozen backbone, and a
prediction writer that streams its output into the embedding cache."""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset

from xferlab.backbones.channels import ChannelAdapter
from xferlab.backbones.preprocess import Preprocessor
from xferlab.backbones.registry import Backbone
from xferlab.data.store import ImageStore
from xferlab.embeddings.cache import EmbeddingCache, RowWriter

log = logging.getLogger(__name__)


class StoreBatches(Dataset):
    """Contiguous blocks of rows of an image store: one item is one batch (one zarr read)."""

    def __init__(self, store: ImageStore, batch_size: int):
        self.store = store
        self.batch_size = int(batch_size)

    def __len__(self) -> int:
        return math.ceil(len(self.store) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = index * self.batch_size
        stop = min(start + self.batch_size, len(self.store))
        images = self.store.read(start, stop)
        if images.dtype == np.uint16:  # torch has limited uint16 support; int32 holds it exactly
            images = images.astype(np.int32)
        return torch.arange(start, stop), torch.from_numpy(images)


class EmbeddingExtractor(L.LightningModule):
    """Frozen backbone in eval mode without gradients; the channel adapter and preprocessing run
    on the same device, inside the step."""

    def __init__(self, backbone: Backbone, preprocessor: Preprocessor, adapter: ChannelAdapter):
        super().__init__()
        self.backbone = backbone.eval().requires_grad_(False)
        self.preprocessor = preprocessor
        self.adapter = adapter

    def predict_step(self, batch, batch_idx: int):
        rows, images = batch
        self.backbone.eval()
        with torch.no_grad():
            views = self.preprocessor.views(images, self.adapter.views)
            embeddings = torch.cat([self.backbone(v) for v in views], dim=1)
        return rows, embeddings.float()


class CacheRowsCallback(BasePredictionWriter):
    def __init__(self, writer: RowWriter):
        super().__init__(write_interval="batch")
        self.writer = writer

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        rows, embeddings = prediction
        self.writer.write(rows.cpu().numpy(), embeddings.cpu().numpy())


def cache_spec(backbone: Backbone, adapter: ChannelAdapter, preprocessor: Preprocessor,
               store: ImageStore, precision: str) -> dict[str, Any]:
    return {
        "backbone": backbone.identity(),
        "channels": adapter.describe(),
        "preprocess": preprocessor.describe(),
        "precision": str(precision),
        "images_fingerprint": store.images_fingerprint,
        "n_samples": len(store),
    }


def extract_embeddings(
    store: ImageStore,
    backbone: Backbone,
    adapter: ChannelAdapter,
    preprocessor: Preprocessor,
    cache_root,
    make_trainer: Callable[..., L.Trainer],
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    precision: str = "32-true",
    chunk_batches: int = 16,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Embeddings of every image of `store`, from the cache or computed once and cached."""
    cache = EmbeddingCache(cache_root, cache_spec(backbone, adapter, preprocessor, store, precision))
    info: dict[str, Any] = {"cache_key": cache.key, "cache_path": str(cache.path)}
    if not cache.is_complete():
        waiting = time.perf_counter()
        with cache.lock():
            # > 0 s in a job that then hits the cache: another job was building this entry
            info["lock_wait_seconds"] = time.perf_counter() - waiting
            if not cache.is_complete():
                start = time.perf_counter()
                loader = DataLoader(
                    StoreBatches(store, batch_size), batch_size=None, shuffle=False,
                    num_workers=num_workers, persistent_workers=False,
                )
                dim = backbone.embed_dim * adapter.n_views
                with cache.build(len(store), dim, batch_size * chunk_batches) as writer:
                    trainer = make_trainer(callbacks=[CacheRowsCallback(writer)], precision=precision)
                    trainer.predict(EmbeddingExtractor(backbone, preprocessor, adapter), loader,
                                    return_predictions=False)
                seconds = time.perf_counter() - start
                info.update(cache_hit=False, extract_seconds=seconds, images_per_second=len(store) / seconds)
                log.info("embedding cache miss: extracted %d images in %.1f s (%.0f images/s) into %s",
                         len(store), seconds, len(store) / seconds, cache.path)
    if "cache_hit" not in info:
        info["cache_hit"] = True
        log.info("embedding cache hit: %s", cache.path)
    return cache.load(), info
