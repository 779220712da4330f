"""What guarding image stores against damage and power cuts costs.

- `verify_reads/<case>`: checking every store chunk against its recorded sha256 as extraction reads
  it (`xferlab.data.checked_reads`). The reading pipeline (`StoreBlocks`: read, check, decode) is
  timed with and without the check in alternating rounds; the difference (best round of each) is
  the added work, given as a percentage of the whole extraction of the same store (model, batch size,
  cache write), timed end to end with the check. Without DataLoader workers (on CPUs) reading runs in
  the main process, so that is what the check adds; with workers it overlaps the forward pass.
- `fsync/<what>`: the share of publishing a demo-size image store and embedding cache entry (write,
  manifest, rename) spent fsyncing every file and folder before the rename and the parent after it
  (`xferlab.runtime.io`); the fastest of a few rounds.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from omegaconf import OmegaConf

from xferlab.backbones.preprocess import Preprocessor
from xferlab.benchmarks.common import compose_config, extract_trainer, synthetic_store
from xferlab.embeddings.cache import EmbeddingCache
from xferlab.embeddings.extractor import StoreBlocks, ensure_embeddings
from xferlab.runtime import io
from xferlab.runtime.building import build

VERIFY_TARGET = 5.0  # percent of the extraction: "a few percent at most"

# (name, backbone overrides, image size, images, batch size): the extraction benchmark's CPU cases
VERIFY_CASES = [
    ("demo_vit_64px", ["backbone=random", "backbone.model_kwargs.depth=6"], 64, 8192, 64),
    ("vit_small16_224px", ["backbone=random_vits16"], 224, 192, 64),
]
# (images, px, embedding width): about the demo's store (10,480 images) and its ViT-S/8 cache entry
FSYNC_CASE = (8192, 64, 384)


def read_seconds(store, batch_size: int, checked: bool) -> float:
    start = time.perf_counter()
    for _ in StoreBlocks(store, batch_size, checked=checked):
        pass
    return time.perf_counter() - start


def measure_verify(name: str, overrides: list[str], size: int, n: int, batch_size: int,
                   rounds: int = 2) -> dict[str, Any]:
    cfg = compose_config(overrides + ["logger=csv"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = synthetic_store(tmp / "store.zarr", n, size)
        backbone = build(cfg.backbone).eval()
        adapter = build(cfg.channels, dataset_channels=store.channel_names, model_channels=backbone.in_channels)
        preprocessor = Preprocessor.for_store(OmegaConf.to_container(cfg.backbone.preprocess), store)
        checked, unchecked, extract = [], [], []
        for r in range(rounds):
            unchecked.append(read_seconds(store, batch_size, checked=False))
            checked.append(read_seconds(store, batch_size, checked=True))
            _, info = ensure_embeddings(store, backbone, adapter, preprocessor, tmp / f"cache{r}",
                                        partial(extract_trainer, accelerator="cpu"), batch_size=batch_size,
                                        precision="32-true", num_workers="auto")
            extract.append(info["extract_seconds"])
        chunk_bytes = sum(p.stat().st_size for p in (store.path / "images" / "c").rglob("*") if p.is_file())
    added = max(min(checked) - min(unchecked), 0.0)
    percent = 100 * added / min(extract)
    return {"benchmark": f"verify_reads/{name}", "value": round(percent, 2), "unit": "% of extract",
            "target": f"<={VERIFY_TARGET}", "meets_target": bool(percent <= VERIFY_TARGET),
            "read_checked_s": round(min(checked), 3), "read_unchecked_s": round(min(unchecked), 3),
            "extract_s": round(min(extract), 2), "images": n, "input_px": size,
            "chunk_mib": round(chunk_bytes / 2**20, 1)}


@contextmanager
def fsync_timer() -> Iterator[list[float]]:
    """Seconds spent in `xferlab.runtime.io`'s fsyncs (whole trees, and single files or folders
    fsynced from the calling thread; those inside a tree are counted with it) while the block runs."""
    spent = [0.0]
    tree, path = io.fsync_tree, io.fsync_path
    main = threading.current_thread()

    def timed(function, only_main: bool):
        def run(*args, **kwargs):
            if only_main and threading.current_thread() is not main:
                return function(*args, **kwargs)
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start
        return run

    io.fsync_tree, io.fsync_path = timed(tree, False), timed(path, True)
    try:
        yield spent
    finally:
        io.fsync_tree, io.fsync_path = tree, path


def publish_store(root: Path, n: int, size: int, dim: int) -> float:
    start = time.perf_counter()
    synthetic_store(root / "store.zarr", n, size)
    return time.perf_counter() - start


def publish_entry(root: Path, n: int, size: int, dim: int, chunk_rows: int = 64) -> float:
    values = np.random.default_rng(0).standard_normal((n, dim), dtype=np.float32)
    start = time.perf_counter()
    cache = EmbeddingCache(root / "cache", {"n_samples": n, "bench": "fsync"})
    with cache.build(n, dim, chunk_rows) as writer:
        for s in range(0, n, chunk_rows):
            writer.write(np.arange(s, min(s + chunk_rows, n)), values[s : s + chunk_rows])
    return time.perf_counter() - start


def measure_fsync(what: str, publish, n: int, size: int, dim: int, rounds: int = 3) -> dict[str, Any]:
    totals, fsyncs = [], []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp, fsync_timer() as spent:
            totals.append(publish(Path(tmp), n, size, dim))
        fsyncs.append(spent[0])
    best = int(np.argmin(totals))
    percent = 100 * fsyncs[best] / totals[best]
    return {"benchmark": f"fsync/{what}", "value": round(percent, 1), "unit": "% of publish",
            "fsync_s": round(fsyncs[best], 3), "publish_s": round(totals[best], 3), "images": n}


def bench_integrity(verify_cases=VERIFY_CASES, fsync_case=FSYNC_CASE, rounds: int = 2) -> list[dict[str, Any]]:
    logging.getLogger("lightning").setLevel(logging.WARNING)
    rows = [measure_verify(*case, rounds=rounds) for case in verify_cases]
    n, size, dim = fsync_case
    rows.append(measure_fsync("image_store", publish_store, n, size, dim, rounds=rounds + 1))
    rows.append(measure_fsync("cache_entry", publish_entry, n, size, dim, rounds=rounds + 1))
    return rows
