"""Embedding extraction: a LightningModule whose `predict_step` runs the frozen backbone, a
dataset that streams the image store in chunk-aligned blocks, and a prediction writer that streams
the embeddings into the cache. Memory holds a few blocks at a time, whatever the store's size.

With `devices > 1` the extraction runs as Lightning DDP (`ddp_spawn`, so the calling job carries on
in its own process afterwards): each rank reads its own blocks and writes its own cache chunks. A job
run as several SLURM tasks (`xferlab.runtime.slurm_tasks`) extracts with its tasks as the ranks
(`ddp`): task 0 decides under the cache lock and the others follow.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any, Callable, Iterator

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
import zarr
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from xferlab.backbones.channels import ChannelAdapter
from xferlab.backbones.preprocess import Preprocessor
from xferlab.backbones.registry import Backbone
from xferlab.data.checked_reads import CheckedLocalStore
from xferlab.data.store import ImageStore, StoreError
from xferlab.embeddings.cache import ChunkWriter, EmbeddingCache
from xferlab.embeddings.progress import ExtractionProgress
from xferlab.embeddings.transfer import StagedCopies
from xferlab.runtime import slurm_tasks
from xferlab.runtime.integrity import describe
from xferlab.runtime.slurm_tasks import JobTasks

log = logging.getLogger(__name__)


class NonFiniteEmbeddingError(RuntimeError):
    """The backbone turned finite pixels into NaN or infinite embeddings."""


def nonfinite_rows(x: torch.Tensor) -> torch.Tensor:
    """Indices (into the batch) of the rows of `x` holding a NaN or infinite value."""
    return torch.nonzero(~torch.isfinite(x.reshape(len(x), -1)).all(dim=1)).flatten()


def per_image(forward: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, n_images: int) -> torch.Tensor:
    """One embedding per image (float32): `inputs` holds `n_images` images' inputs, image by image;
    with several per image (`backbone.preprocess.fit=tiles`) the forward runs over `n_images`
    inputs at a time (the memory of an untiled batch) and each image's tile embeddings are averaged."""
    if len(inputs) == n_images:
        return forward(inputs).float()
    out = torch.cat([forward(inputs[i : i + n_images]).float() for i in range(0, len(inputs), n_images)])
    return out.view(n_images, len(inputs) // n_images, -1).mean(dim=1)


def block_rows(store_chunk_rows: int, batch_size: int) -> int:
    """Rows per block: whole store chunks covering at least one batch, so every chunk is decoded
    once. Blocks are also the cache's chunks and the unit shared out between ranks and workers."""
    return math.ceil(batch_size / store_chunk_rows) * store_chunk_rows


class StoreBlocks(IterableDataset):
    """Batches `(row indices, images)` of an image store, read one block (whole zarr chunks) at a
    time. Blocks are dealt round-robin to DDP ranks and DataLoader workers; every row is produced
    exactly once over all of them. Each chunk file is checked against the store's manifest as it is
    read (a damaged one raises `StoreDamagedError` naming it and its rows); `checked=False` skips
    that, only to measure what it costs (`xferlab.benchmarks.integrity`)."""

    def __init__(self, store: ImageStore, batch_size: int, checked: bool = True):
        self.files = store.checked_files() if checked else CheckedLocalStore(store.path, None)
        self.n = len(store)
        self.batch_size = int(batch_size)
        self.block_rows = block_rows(int(store.images.chunks[0]), self.batch_size)
        self._images = None

    @property
    def n_blocks(self) -> int:
        return math.ceil(self.n / self.block_rows)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_images": None}  # each process opens the array itself

    def shard(self) -> tuple[int, int]:
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
        worker = get_worker_info()
        wid, workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        return rank * workers + wid, world * workers

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._images is None:
            self._images = zarr.open_array(store=self.files, path="images", mode="r")
        shard, shards = self.shard()
        for block in range(shard, self.n_blocks, shards):
            start = block * self.block_rows
            stop = min(start + self.block_rows, self.n)
            images = np.asarray(self._images[start:stop])
            if images.dtype == np.uint16:  # torch has few uint16 ops: the bits travel as int16 (see widen)
                images = images.view(np.int16)
            images = torch.from_numpy(images)
            for b in range(0, stop - start, self.batch_size):
                yield torch.arange(start + b, min(start + b + self.batch_size, stop)), images[b : b + self.batch_size]


def widen(images: torch.Tensor, store_dtype: np.dtype) -> torch.Tensor:
    """Undo StoreBlocks' transport of uint16 pixels as int16 bits, on the step's device (half
    the bytes to copy and move than widening first)."""
    if np.dtype(store_dtype) == np.uint16:
        return images.to(torch.int32) & 0xFFFF
    return images


class EmbeddingExtractor(L.LightningModule):
    """Frozen backbone in eval mode without gradients; the channel adapter and preprocessing run
    on the same device, inside the step. `compile=True` runs the backbone through `torch.compile`.
    On a CUDA device the images reach it through reused pinned buffers on a side stream
    (`StagedCopies`; `staged_copies=False`: Lightning's own transfer, to compare)."""

    def __init__(self, backbone: Backbone, preprocessor: Preprocessor, adapter: ChannelAdapter,
                 compile: bool = False, store_dtype: np.dtype = np.dtype("float32"), store_path: str = "the store",
                 sample_ids: np.ndarray | None = None, staged_copies: bool = True):
        super().__init__()
        self.staged_copies = staged_copies
        self._copies: StagedCopies | None = None
        self.store_dtype = np.dtype(store_dtype)
        self.store_path, self.sample_ids = str(store_path), sample_ids
        self.backbone = backbone.eval().requires_grad_(False)
        self.preprocessor = preprocessor
        self.adapter = adapter
        self.forward_fn = torch.compile(self.backbone, dynamic=False) if compile else self.backbone

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        if device.type != "cuda" or not self.staged_copies:
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        if self._copies is None or self._copies.device != device:
            self._copies = StagedCopies(device)
        rows, images = batch
        return rows, self._copies(images)  # rows stay on the host: only the cache writer reads them

    def describe_rows(self, rows: torch.Tensor) -> str:
        rows = rows.cpu().tolist()[:5]
        if self.sample_ids is None:
            return f"row(s) {rows}"
        return f"row(s) {rows} (sample id(s) {[str(self.sample_ids[r]) for r in rows]})"

    def predict_step(self, batch, batch_idx: int):
        rows, images = batch
        if self.store_dtype.kind == "f":  # integer pixels are always finite
            bad = nonfinite_rows(images)
            if len(bad):
                raise StoreError(
                    f"{self.store_path}: {self.describe_rows(rows[bad.to(rows.device)])} hold NaN or infinite "
                    "pixels; they would give NaN embeddings. Rebuild the store from fixed inputs (importers and StoreWriter refuse "
                    "such pixels, so an older or hand-made store wrote them)."
                )
        with torch.no_grad():
            views = self.preprocessor.views(widen(images, self.store_dtype), self.adapter.views)
            embeddings = torch.cat([per_image(self.forward_fn, v, len(images)) for v in views], dim=1)
        # left on the device, unchecked: reading them back would wait for this batch's forward
        # (the cache writer checks them with `check_finite`, once the next batch is queued)
        return rows, embeddings

    def check_finite(self, rows: torch.Tensor, embeddings: torch.Tensor) -> None:
        """Raise NonFiniteEmbeddingError naming the rows whose embeddings hold NaN or inf."""
        bad = nonfinite_rows(embeddings)
        if len(bad):
            raise NonFiniteEmbeddingError(
                f"the backbone gave NaN or infinite embeddings for {self.describe_rows(rows[bad.to(rows.device)])} of "
                f"{self.store_path} (their pixels are finite). With extract.precision=16-mixed this is usually "
                "an overflow: use 32-true or bf16-mixed; otherwise check the backbone's weights."
            )


class CacheWriterCallback(BasePredictionWriter):
    """Each rank writes its own rows through its own copy of the cache writer. A batch's embeddings
    are read back, checked (`EmbeddingExtractor.check_finite`) and written one batch late, once the
    next batch's forward is queued: on a GPU, waiting for them then overlaps that forward instead
    of leaving the device idle while the host writes and fetches. The values are the same."""

    def __init__(self, writer: ChunkWriter):
        super().__init__(write_interval="batch")
        self.writer = writer
        self.active: ChunkWriter | None = None
        self.pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def on_predict_start(self, trainer, pl_module):
        self.active = self.writer.renamed(f"rank-{trainer.global_rank}")
        self.pending = None

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        self.flush(pl_module)
        self.pending = prediction

    def flush(self, pl_module) -> None:
        if self.pending is None:
            return
        (rows, embeddings), self.pending = self.pending, None
        rows, embeddings = rows.cpu(), embeddings.cpu()  # waits for that batch only
        pl_module.check_finite(rows, embeddings)
        self.active.write(rows.numpy(), embeddings.numpy())

    def on_predict_end(self, trainer, pl_module):
        self.flush(pl_module)
        chunks = self.active.close()
        if trainer.world_size > 1:
            log.info("rank %d of %d wrote %d cache chunk(s): %s", trainer.global_rank, trainer.world_size,
                     len(chunks), chunks)


def cache_spec(backbone: Backbone, adapter: ChannelAdapter, preprocessor: Preprocessor,
               store: ImageStore, precision: str, dtype: str = "float32", compile: bool = False) -> dict[str, Any]:
    spec = {
        "backbone": backbone.identity(),
        "channels": adapter.describe(),
        "preprocess": preprocessor.describe(),
        "precision": str(precision),
        "images_fingerprint": store.images_fingerprint,
        "n_samples": len(store),
    }
    # options added later enter the spec only when set, so existing entries keep their keys
    if dtype != "float32":
        spec["dtype"] = dtype
    if compile:  # compiled kernels may round differently
        spec["compile"] = True
    return spec


def cpu_has_bf16() -> bool | None:
    """Whether this CPU has bf16 units (AVX512-BF16 or AMX); None where that cannot be read."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return None
    return "avx512_bf16" in flags or "amx_bf16" in flags


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. a SLURM allocation), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_workers(num_workers: int | str, on_cpu: bool, blocks: int | None = None, cores: int | None = None,
                    ranks: int = 1) -> int:
    """Reader processes per rank. `auto`: none on a CPU-only machine (the forward pass already uses
    every core and reading a block costs far less than its forward pass); on an accelerator, the
    rank's share of the cores (`ranks` processes extracting) less two (its main process feeds the
    device and runs the loop; a core for the copies and the cache writes), at least one, and no
    more than the rank has blocks to read."""
    if num_workers != "auto":
        workers = int(num_workers)
        if workers < 0:
            raise ValueError(f"extract.num_workers={num_workers}: use 0 (read in the main process), a positive "
                             "number of reader processes, or auto")
        return workers
    if on_cpu:
        return 0
    workers = max(1, (cores or usable_cores()) // max(1, ranks) - 2)
    return workers if blocks is None else max(1, min(workers, math.ceil(blocks / max(1, ranks))))


def ensure_embeddings(
    store: ImageStore,
    backbone: Backbone,
    adapter: ChannelAdapter,
    preprocessor: Preprocessor,
    cache_root,
    make_trainer: Callable[..., L.Trainer],
    *,
    batch_size: int = 64,
    num_workers: int | str = 0,
    precision: str = "32-true",
    dtype: str = "float32",
    compile: bool = False,
    devices: int = 1,
    tasks: JobTasks | None = None,
) -> tuple[EmbeddingCache, dict[str, Any]]:
    """The cache entry for these embeddings, computed (once, under the entry's lock) if missing.
    With `tasks` (a job run as several SLURM tasks, joined) every task calls this: task 0 decides
    and the others extract with it, or return at once when the entry is there."""
    cache = EmbeddingCache(cache_root, cache_spec(backbone, adapter, preprocessor, store, precision, dtype, compile))
    info: dict[str, Any] = {"cache_key": cache.key, "cache_path": str(cache.path)}
    slurm_tasks.check_devices(tasks, devices)
    options = dict(batch_size=batch_size, num_workers=num_workers, precision=precision, compile=compile,
                   devices=devices, tasks=tasks)
    if tasks is not None and not tasks.leader:
        return cache, {**info, **_follow(cache, store, backbone, adapter, preprocessor, make_trainer, **options)}
    store_files = store.image_digests()  # an entry computed from other bytes of the store is rebuilt
    if not cache.is_intact(store_files):
        waiting = time.perf_counter()
        with cache.lock():
            # > 0 s in a job that then hits the cache: another job was building this entry
            info["lock_wait_seconds"] = time.perf_counter() - waiting
            cache.remove_stale_builds()
            problems = cache.problems(store_files)
            if problems != []:
                if problems is not None:
                    cache.discard(describe(problems))
                info.update(cache_hit=False, **_extract(cache, store, backbone, adapter, preprocessor, make_trainer,
                                                        **options))
    if "cache_hit" not in info:
        if tasks is not None:
            slurm_tasks.announce((cache.key, None))  # nothing for the other tasks to do
        info["cache_hit"] = True
        log.info("embedding cache hit: %s", cache.path)
    return cache, info


def _follow(cache: EmbeddingCache, store: ImageStore, backbone: Backbone, adapter: ChannelAdapter,
            preprocessor: Preprocessor, make_trainer, **options) -> dict[str, Any]:
    """A task other than 0: extract its share into the entry task 0 is building, if it builds one."""
    tasks: JobTasks = options["tasks"]
    key, writer = slurm_tasks.receive(tasks)
    if key != cache.key:
        raise slurm_tasks.TasksError(
            f"{tasks.describe()}: task 0 computes embeddings {key}, this task's config gives {cache.key}; the tasks "
            "of one job must run the same config")
    if writer is None:
        return {"cache_hit": True}
    _predict(writer, store, backbone, adapter, preprocessor, make_trainer, **options)
    slurm_tasks.wait_for_all(tasks, "the extraction")
    return {"cache_hit": False}


def _predict(writer: ChunkWriter, store: ImageStore, backbone: Backbone, adapter: ChannelAdapter,
             preprocessor: Preprocessor, make_trainer, *, batch_size, num_workers, precision, compile, devices,
             tasks: JobTasks | None) -> int:
    """Run the extraction into `writer` on this process's rank(s); the reader processes per rank."""
    devices = int(devices)
    trainer_kwargs: dict[str, Any] = {"precision": precision, "use_distributed_sampler": False}
    if tasks is not None:  # the tasks are the ranks, already joined
        trainer_kwargs.update(devices=tasks.per_node, num_nodes=tasks.nodes, strategy="ddp")
        devices = tasks.world
    elif devices > 1:
        trainer_kwargs.update(devices=devices, strategy="ddp_spawn")
    dataset = StoreBlocks(store, batch_size)
    trainer = make_trainer(callbacks=[CacheWriterCallback(writer), ExtractionProgress(len(store), backbone.name)],
                           **trainer_kwargs)
    on_cpu = isinstance(trainer.accelerator, CPUAccelerator)
    if on_cpu and str(precision).startswith("bf16") and cpu_has_bf16() is False:
        log.warning("extract.precision=%s on a CPU without bf16 units (no avx512_bf16 or amx_bf16): "
                    "expect it to run several times slower than extract.precision=32-true", precision)
    workers = resolve_workers(num_workers, on_cpu, blocks=dataset.n_blocks, ranks=devices)
    # no pinning in the DataLoader: on CUDA the extractor stages batches in its own pinned buffers
    loader = DataLoader(dataset, batch_size=None, num_workers=workers,
                        prefetch_factor=2 if workers else None, pin_memory=False)
    extractor = EmbeddingExtractor(backbone, preprocessor, adapter, compile=compile,
                                   store_dtype=store.images.dtype, store_path=str(store.path),
                                   sample_ids=store.samples["sample_id"].to_numpy())
    trainer.predict(extractor, loader, return_predictions=False)
    return workers


def _extract(cache: EmbeddingCache, store: ImageStore, backbone: Backbone, adapter: ChannelAdapter,
             preprocessor: Preprocessor, make_trainer, **options) -> dict[str, Any]:
    start = time.perf_counter()
    tasks: JobTasks | None = options["tasks"]
    devices = tasks.world if tasks is not None else int(options["devices"])
    with cache.build(len(store), backbone.embed_dim * adapter.n_views, block_rows(int(store.images.chunks[0]),
                     int(options["batch_size"])), source=store.source_record()) as writer:
        if tasks is not None:
            slurm_tasks.announce((cache.key, writer))
        workers = _predict(writer, store, backbone, adapter, preprocessor, make_trainer, **options)
        if tasks is not None:  # every task's rows are written before the entry is published
            slurm_tasks.wait_for_all(tasks, "the extraction")
    seconds = time.perf_counter() - start
    log.info("embedding cache miss: extracted %d images in %.1f s (%.0f images/s, %d rank(s), %d workers) into %s",
             len(store), seconds, len(store) / seconds, devices, workers, cache.path)
    return {"extract_seconds": seconds, "images_per_second": len(store) / seconds, "extract_devices": devices,
            "extract_workers": workers}


def extract_embeddings(store: ImageStore, backbone: Backbone, adapter: ChannelAdapter, preprocessor: Preprocessor,
                       cache_root, make_trainer: Callable[..., L.Trainer],
                       **options) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Embeddings of every image of `store` as float32, from the cache or computed once and cached.
    `options` are those of `ensure_embeddings`. A task other than 0 of a job run as several SLURM
    tasks gets None: it only helps extract."""
    cache, info = ensure_embeddings(store, backbone, adapter, preprocessor, cache_root, make_trainer, **options)
    tasks = options.pop("tasks", None)
    if tasks is not None and not tasks.leader:
        return None, info
    try:
        return cache.load(), info
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - an entry that cannot be read is rebuilt (e.g. one without a manifest)
        pass
    with cache.lock():
        try:  # another job may have rebuilt it meanwhile
            return cache.load(), info
        except MemoryError:
            raise
        except Exception as err:  # noqa: BLE001
            if cache.path.exists():
                cache.discard(f"reading it failed: {type(err).__name__}: {err}")
    # rebuilt by this process alone: the other tasks have left
    cache, info = ensure_embeddings(store, backbone, adapter, preprocessor, cache_root, make_trainer, **options)
    return cache.load(), info
