"""xferlab's extraction side by side with the way peers extract embeddings, on the same images,
model, precision, batch size, worker count and device, in one run (alternating rounds, the best
round of each counts). The images are exported from the store as files first (not timed).

- `dino4cells`: the DINO4Cells loop: a Dataset reading each image's channel files one by one
  (16-bit PNGs, one per channel, with PIL), per image transforms in the DataLoader workers
  (ToTensor-style scaling to [0, 1], Resize, per-image channel normalisation), default collate,
  the model called per batch on the device.
- `imagefolder`: a plain torchvision `ImageFolder` over the same images as 8-bit RGB PNGs
  (nucleus red, protein green) with the standard `Resize` / `ToTensor` / `Normalize` transforms;
  the empty blue channel is dropped on the device for the two-slot model.
- `xferlab`: `ensure_embeddings` from the store (reading, checking, preprocessing on the device,
  writing the cache entry).
`value` is xferlab's images/s over the peer's (> 1: xferlab is faster).

`peer_feed/<size>px/<loop>` (`bench_peer_feed`): the host side alone, images per CPU-second
(per core) that each loop's data loading delivers without the model, in one process with one
torch thread (as in a DataLoader worker): xferlab
reads, checks and decodes store chunks (its resize and normalisation run on the device); the
peers read files and transform each image on the CPU, then collate. On CPU-only machines the
forward pass dominates every loop; on a GPU this is what bounds them.
"""

from __future__ import annotations

import logging
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, transforms

from xferlab.backbones.preprocess import Preprocessor
from xferlab.benchmarks.codecs import cpu_seconds, synthcell_crops, write_store
from xferlab.benchmarks.common import compose_config, extract_trainer
from xferlab.benchmarks.extraction import autocast
from xferlab.data.codecs import DEFAULT_CODEC
from xferlab.embeddings.extractor import StoreBlocks, ensure_embeddings, resolve_workers
from xferlab.runtime.building import build

# (name, backbone overrides, stored crop size, images, batch size, precisions)
CPU_CASES = [
    ("demo_vit_64px", ["backbone=random", "backbone.model_kwargs.depth=6"], 64, 1024, 64, ("32-true",)),
    ("vit_small16_128px_to_224", ["backbone=random_vits16"], 128, 48, 16, ("32-true",)),
]
GPU_CASES = [
    ("vit_small16_128px_to_224", ["backbone=random_vits16"], 128, 8192, 256, ("bf16-mixed", "32-true")),
    ("vit_small16_224px", ["backbone=random_vits16"], 224, 4096, 256, ("bf16-mixed",)),
]


def export_files(images: np.ndarray, root: Path) -> tuple[Path, Path]:
    """The crops as files: one 16-bit PNG per channel (DINO4Cells-style) and one 8-bit RGB PNG per
    crop under a class folder (ImageFolder-style)."""
    d4c, folder = root / "dino4cells", root / "imagefolder" / "class0"
    d4c.mkdir(parents=True)
    folder.mkdir(parents=True)
    for i, crop in enumerate(images):
        for c, plane in enumerate(crop):
            Image.fromarray(plane).save(d4c / f"{i:06d}_c{c}.png")
        scaled = (crop.astype(np.float32) / np.maximum(crop.max(axis=(1, 2), keepdims=True), 1) * 255).astype(np.uint8)
        rgb = np.zeros((*crop.shape[1:], 3), dtype=np.uint8)
        rgb[..., : len(crop)] = scaled.transpose(1, 2, 0)
        Image.fromarray(rgb).save(folder / f"{i:06d}.png")
    return d4c, root / "imagefolder"


class ChannelFiles(Dataset):
    """DINO4Cells-style: each item reads its channel files with PIL and transforms them on the CPU."""

    def __init__(self, root: Path, n: int, channels: int, size: int):
        self.root, self.n, self.channels = root, n, channels
        self.resize = transforms.Resize((size, size), antialias=True)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        planes = [np.array(Image.open(self.root / f"{i:06d}_c{c}.png")) for c in range(self.channels)]
        x = torch.from_numpy(np.stack(planes).astype(np.float32) / 65535.0)  # ToTensor-style [0, 1]
        x = self.resize(x)
        mean, std = x.mean(dim=(1, 2), keepdim=True), x.std(dim=(1, 2), keepdim=True)
        return (x - mean) / (std + 1e-6)  # DINO4Cells' per-image "self normalisation"


def peer_loop(dataset: Dataset, model: torch.nn.Module, batch_size: int, workers: int, device: str,
              precision: str, slots: int | None = None) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, pin_memory=device == "cuda",
                        prefetch_factor=2 if workers else None)
    out = []
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    with torch.inference_mode(), autocast(precision, device):
        for batch in loader:
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            x = x.to(device, non_blocking=True)
            if slots is not None:
                x = x[:, :slots]
            out.append(model(x).float().cpu())
    sync()
    return time.perf_counter() - start


def measure(name: str, overrides: list[str], size: int, n: int, batch_size: int, precisions: Sequence[str],
            rounds: int = 2, device: str = "cpu") -> list[dict[str, Any]]:
    """Every precision of one case, on one store and one export of its images."""
    cfg = compose_config(overrides + ["logger=csv"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = synthcell_crops(size, n)
        store = write_store(tmp / "store.zarr", images, DEFAULT_CODEC, None)
        d4c, folder = export_files(images, tmp / "files")
        backbone = build(cfg.backbone).eval().to(device)
        adapter = build(cfg.channels, dataset_channels=store.channel_names, model_channels=backbone.in_channels)
        preprocessor = Preprocessor.for_store(OmegaConf.to_container(cfg.backbone.preprocess), store)
        input_size = preprocessor.input_size or size
        workers = resolve_workers("auto", on_cpu=device == "cpu", blocks=None)
        accelerator = "gpu" if device == "cuda" else "cpu"
        slots = len(backbone.in_channels)
        imagefolder = datasets.ImageFolder(folder, transform=transforms.Compose([
            transforms.Resize((input_size, input_size), antialias=True), transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]))
        x = preprocessor(torch.from_numpy(images[:batch_size].astype(np.float32)), adapter).to(device)

        rows = []
        for precision in precisions:
            rows += compare(name, n, batch_size, precision, rounds, device, {
                "xferlab": lambda r: ensure_embeddings(
                    store, backbone, adapter, preprocessor, tmp / f"cache-{precision}-{r}",
                    partial(extract_trainer, accelerator=accelerator), batch_size=batch_size, precision=precision,
                    num_workers=workers)[1]["extract_seconds"],
                "dino4cells": lambda r: peer_loop(ChannelFiles(d4c, n, len(store.channel_names), input_size),
                                                  backbone.to(device), batch_size, workers, device, precision),
                "imagefolder": lambda r: peer_loop(imagefolder, backbone.to(device), batch_size, workers, device,
                                                   precision, slots=slots),
            }, warm_up=lambda: backbone.to(device)(x), extra={"workers": workers, "stored_px": size,
                                                             "input_px": input_size})
        return rows


def compare(name: str, n: int, batch_size: int, precision: str, rounds: int, device: str,
            loops: dict[str, Callable[[int], float]], warm_up: Callable[[], Any], extra: dict[str, Any]):
    """Time each loop in alternating rounds (best round counts); rows of xferlab over each peer."""
    with torch.inference_mode(), autocast(precision, device):  # allocator, kernels
        for _ in range(3):
            warm_up()
    seconds: dict[str, list[float]] = {k: [] for k in loops}
    for r in range(rounds):
        for key, loop in loops.items():
            seconds[key].append(loop(r))
    rate = {k: n / min(v) for k, v in seconds.items()}
    common = {"images": n, "batch_size": batch_size, "precision": precision, **extra,
              "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
              "threads": torch.get_num_threads(), "xferlab_images_per_s": round(rate["xferlab"], 1)}
    return [{"benchmark": f"peers/{name}/{precision}/xferlab_over_{peer}", "value": round(rate["xferlab"] / rate[peer], 3),
             "unit": "ratio", "peer_images_per_s": round(rate[peer], 1), **common}
            for peer in loops if peer != "xferlab"]


def bench_peer_feed(sizes: Sequence[int] = (128, 224), n: int = 256, batch_size: int = 64, input_size: int = 224,
                    rounds: int = 2) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            root = Path(tmp) / str(size)
            images = synthcell_crops(size, n)
            store = write_store(root / "store.zarr", images, DEFAULT_CODEC, None)
            d4c, folder = export_files(images, root / "files")
            imagefolder = datasets.ImageFolder(folder, transform=transforms.Compose([
                transforms.Resize((input_size, input_size), antialias=True), transforms.ToTensor(),
                transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]))
            feeds = {
                "xferlab": lambda: [x for _, x in StoreBlocks(store, batch_size)],
                "dino4cells": lambda: list(DataLoader(ChannelFiles(d4c, n, images.shape[1], input_size),
                                                      batch_size=batch_size)),
                "imagefolder": lambda: list(DataLoader(imagefolder, batch_size=batch_size)),
            }
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # as in a DataLoader worker (idle intra-op threads would spin on CPU time)
            try:
                rate = {name: n / cpu_seconds(feed, rounds) for name, feed in feeds.items()}
            finally:
                torch.set_num_threads(threads)
            for name, value in rate.items():
                rows.append({"benchmark": f"peer_feed/{size}px/{name}", "value": round(value), "unit": "images/s/core",
                             "stored_px": size, "input_px": input_size, "images": n, "batch_size": batch_size,
                             "xferlab_over_this": round(rate["xferlab"] / value, 2)})
    return rows


def bench_peers(cases: Sequence = CPU_CASES, rounds: int = 2, device: str = "cpu") -> list[dict[str, Any]]:
    logging.getLogger("lightning").setLevel(logging.WARNING)
    return [row for name, overrides, size, n, batch, precisions in cases
            for row in measure(name, overrides, size, n, batch, precisions, rounds, device)]


LOOPS = {"xferlab": "xferlab", "dino4cells": "DINO4Cells-style", "imagefolder": "`ImageFolder`"}


def feed_table(rows: list[dict[str, Any]]) -> str:
    """`bench_peer_feed`'s rows: images per CPU-second of each loop's host side, and xferlab's ratio to each."""
    sizes = sorted({r["stored_px"] for r in rows})
    peers = [k for k in LOOPS if k != "xferlab"]
    lines = ["| stored crops | " + " | ".join(LOOPS.values()) + " | "
             + " | ".join(f"xferlab / {LOOPS[p]}" for p in peers) + " |", "|---" * (1 + len(LOOPS) + len(peers)) + "|"]
    for size in sizes:
        by = {r["benchmark"].rsplit("/", 1)[1]: r for r in rows if r["stored_px"] == size}
        lines.append(f"| {size} px | " + " | ".join(f"{by[k]['value']:,}" for k in LOOPS) + " | "
                     + " | ".join(f"{by[p]['xferlab_over_this']:.1f}x" for p in peers) + " |")
    return "\n".join(lines) + "\n"


def table(rows: list[dict[str, Any]]) -> str:
    """`bench_peers`'s rows: same model, batch, precision and device, images per second of each loop end to end."""
    lines = ["| case | precision | images | xferlab images/s | peer | peer images/s | xferlab / peer |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        _, case, precision, over = r["benchmark"].split("/")
        peer = LOOPS[over.removeprefix("xferlab_over_")]
        lines.append(f"| `{case}` | {precision} | {r['images']:,} | {r['xferlab_images_per_s']:.1f} | {peer} | "
                     f"{r['peer_images_per_s']:.1f} | {r['value']:.2f} |")
    return "\n".join(lines) + "\n"
