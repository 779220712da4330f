"""Extraction throughput through the whole pipeline (store read, channel mapping, normalisation,
forward, cache write) over the raw forward throughput of the same model, precision and batch size
on an in-memory tensor. Both are timed in alternating rounds; the best round of each counts."""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from xferlab.backbones.preprocess import Preprocessor
from xferlab.benchmarks.common import compose_config, extract_trainer, synthetic_store
from xferlab.runtime.building import build
from xferlab.embeddings.extractor import ensure_embeddings

TARGET = 0.90

# (name, backbone config overrides, store image size, images, batch size, precisions). The demo
# case extracts about as many images as the demo's store holds (10,480). bf16 is measured for the
# ViT-S only (on CPUs without bf16 units it is several times slower than fp32).
CASES = [
    ("demo_vit_64px", ["backbone=random", "backbone.model_kwargs.depth=6"], 64, 8192, 64, ("32-true",)),
    ("vit_small16_224px", ["backbone=random_vits16"], 224, 192, 64, ("32-true", "bf16-mixed")),
]


# On a GPU: a larger store and batch, so that the pipeline has to keep thousands of images/s fed.
# The realistic store holds 128 px crops, resized to the model's 224 px on the device.
GPU_CASES = [
    ("vit_small16_128px_to_224", ["backbone=random_vits16"], 128, 32768, 256, ("bf16-mixed", "32-true")),
    ("vit_small16_224px", ["backbone=random_vits16"], 224, 16384, 256, ("bf16-mixed", "32-true")),
]
GPU_TARGETS = {"vit_small16_128px_to_224": 0.90, "vit_small16_224px": 0.75}  # issue 20


def autocast(precision: str, device: str):
    if precision == "bf16-mixed":
        return torch.autocast(device, dtype=torch.bfloat16)
    if precision == "16-mixed":
        return torch.autocast(device, dtype=torch.float16)
    return contextlib.nullcontext()


def measure(name: str, overrides: list[str], size: int, n: int, batch_size: int, precision: str,
            rounds: int = 2, device: str = "cpu") -> dict[str, Any]:
    cfg = compose_config(overrides + ["logger=csv"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = synthetic_store(tmp / "store.zarr", n, size)
        store_chunk_rows = store.chunk_rows
        backbone = build(cfg.backbone).eval().to(device)
        adapter = build(cfg.channels, dataset_channels=store.channel_names, model_channels=backbone.in_channels)
        preprocessor = Preprocessor.for_store(OmegaConf.to_container(cfg.backbone.preprocess), store)
        x = preprocessor(torch.from_numpy(store.read(0, batch_size).astype(np.float32)), adapter).to(device)
        n_batches = math.ceil(n / batch_size)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        accelerator = "gpu" if device == "cuda" else "cpu"

        def raw() -> float:
            backbone.to(device)  # Lightning hands the model back on the CPU after predicting
            with torch.inference_mode(), autocast(precision, device):
                sync()
                start = time.perf_counter()
                for _ in range(n_batches):
                    backbone(x)
                sync()
                return time.perf_counter() - start

        def pipeline(round_: int) -> float:
            _, info = ensure_embeddings(store, backbone, adapter, preprocessor, tmp / f"cache{round_}",
                                        partial(extract_trainer, accelerator=accelerator),
                                        batch_size=batch_size, precision=precision, num_workers="auto")
            return info["extract_seconds"]

        with torch.inference_mode(), autocast(precision, device):  # warm-up (allocator, kernels)
            for _ in range(3):
                backbone(x)
        raw_s, pipe_s = [], []
        for r in range(rounds):
            raw_s.append(raw())
            pipe_s.append(pipeline(r))
    raw_rate, pipe_rate = n_batches * batch_size / min(raw_s), n / min(pipe_s)
    ratio = pipe_rate / raw_rate
    return {"benchmark": f"extraction/{name}/{precision}", "value": round(ratio, 3), "unit": "ratio",
            "target": f">={TARGET}", "meets_target": bool(ratio >= TARGET),
            "pipeline_images_per_s": round(pipe_rate, 1), "raw_images_per_s": round(raw_rate, 1),
            "images": n, "batch_size": batch_size, "stored_size": size, "input_size": int(x.shape[-1]),
            "chunk_rows": store_chunk_rows, "threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu"}


def bench_extraction(cases=CASES, rounds: int = 2, device: str = "cpu") -> list[dict[str, Any]]:
    logging.getLogger("lightning").setLevel(logging.WARNING)
    return [measure(name, overrides, size, n, batch, precision, rounds, device)
            for name, overrides, size, n, batch, precisions in cases for precision in precisions]


def bench_extraction_gpu() -> list[dict[str, Any]]:
    """The same ratio on the first CUDA device (run by `python -m xferlab.bench extraction_gpu`)."""
    if not torch.cuda.is_available():
        raise RuntimeError("extraction_gpu needs a CUDA device and this machine has none; "
                           "run the other benchmarks (the default) instead")
    rows = bench_extraction(GPU_CASES, device="cuda")
    for row in rows:
        row["benchmark"] = row["benchmark"].replace("extraction/", "extraction_gpu/")
        target = GPU_TARGETS.get(row["benchmark"].split("/")[1])
        if target is not None:
            row.update(target=f">={target}", meets_target=bool(row["value"] >= target))
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """Extraction rows (CPU or GPU): the raw forward pass and the pipeline, images per second, and their ratio."""
    lines = ["| case | device | precision | crops: stored -> input | images | raw forward, images/s | "
             "pipeline, images/s | pipeline / raw | target |", "|---" * 9 + "|"]
    for r in rows:
        _, case, precision = r["benchmark"].split("/")
        stored = r.get("stored_size", r["input_size"])
        met = "" if "target" not in r else f"{r['target']} ({'met' if r['meets_target'] else 'NOT met'})"
        lines.append(f"| `{case}` | {r['device']}, {r['threads']} threads | {precision} | {stored} -> "
                     f"{r['input_size']} px | {r['images']:,} | {r['raw_images_per_s']:,.1f} | "
                     f"{r['pipeline_images_per_s']:,.1f} | **{r['value']:.2f}** | {met} |")
    return "\n".join(lines) + "\n"
