"""The GPU check of issue 20, in one command that runs in a few minutes on one GPU:
`python -m xferlab.benchmarks.gpu` (or `scripts/gpu_bench.sh`).

Sections, in order (the JSON under `--out`, default `docs/bench/`, is rewritten after each, so a
run stopped part-way keeps what it measured):
1. `staged_copies`: embeddings through the staged pinned copies equal, bit for bit, those through
   Lightning's own transfer (same kernels, same inputs: they must);
2. `extraction_gpu`: pipeline / raw forward, ViT-S/16 at 224 px, for 128 px stored crops resized on
   the device (target >= 0.90) and 224 px stored crops (>= 0.75), bf16 and fp32;
3. `peers`: xferlab over the DINO4Cells-style loop and over a torchvision ImageFolder pipeline;
4. `host_feed`: images/s per core that reading and the main process's copy can feed, on this host;
5. `codecs`: decode GB/s per core of each codec on this host.
Each row says its section; the record holds the machine, versions and git revision.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from xferlab.backbones.preprocess import Preprocessor
from xferlab.bench import format_table, machine
from xferlab.benchmarks.codecs import bench_codecs
from xferlab.benchmarks.common import compose_config, extract_trainer, synthetic_store, versions
from xferlab.benchmarks.extraction import bench_extraction_gpu
from xferlab.benchmarks.host_feed import bench_host_feed
from xferlab.benchmarks.peers import GPU_CASES, bench_peer_feed, bench_peers
from xferlab.embeddings.extractor import EmbeddingExtractor, StoreBlocks
from xferlab.runtime.building import build
from xferlab.runtime.io import atomic_write_json
from xferlab.runtime.provenance import git_revision


def check_staged_copies(n: int = 512, size: int = 128, batch_size: int = 128) -> list[dict[str, Any]]:
    """Embeddings of one store through `StagedCopies` and through Lightning's transfer, compared."""
    cfg = compose_config(["backbone=random_vits16", "logger=csv"])
    with tempfile.TemporaryDirectory() as tmp:
        store = synthetic_store(Path(tmp) / "store.zarr", n, size)
        backbone = build(cfg.backbone).eval()
        adapter = build(cfg.channels, dataset_channels=store.channel_names, model_channels=backbone.in_channels)
        preprocessor = Preprocessor.for_store(OmegaConf.to_container(cfg.backbone.preprocess), store)
        out = {}
        for staged in (True, False):
            extractor = EmbeddingExtractor(backbone, preprocessor, adapter, store_dtype=store.images.dtype,
                                           staged_copies=staged)
            trainer = extract_trainer(accelerator="gpu", precision="32-true")
            loader = DataLoader(StoreBlocks(store, batch_size), batch_size=None)
            batches = trainer.predict(extractor, loader, return_predictions=True)
            rows = torch.cat([r.cpu() for r, _ in batches])
            out[staged] = torch.cat([e.cpu() for _, e in batches])[torch.argsort(rows)].numpy()
    equal = bool(np.array_equal(out[True], out[False]))
    return [{"benchmark": "staged_copies/bit_identical", "value": equal, "unit": "bool", "target": "True",
             "meets_target": equal, "images": n, "stored_px": size}]


# name -> section, run in this order
SECTIONS: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "staged_copies": check_staged_copies,
    "extraction_gpu": bench_extraction_gpu,
    "peers": lambda: bench_peers(GPU_CASES, device="cuda"),
    "host_feed": lambda: bench_host_feed() + bench_peer_feed(),
    "codecs": lambda: bench_codecs(rounds=2),
}


def run(names: list[str], out: Path) -> Path:
    if not torch.cuda.is_available():
        raise RuntimeError("the GPU check needs a CUDA device and this machine has none; on CPU run "
                           "`python -m xferlab.bench codecs host_feed peers` instead")
    logging.getLogger("lightning").setLevel(logging.WARNING)
    started = datetime.now()
    path = out / f"gpu-{torch.cuda.get_device_name(0).replace(' ', '_')}-{started:%Y-%m-%d_%H-%M-%S}.json"
    record = {"time": started.isoformat(timespec="seconds"), "git_revision": git_revision(), "machine": machine(),
              "versions": versions(), "sections_done": [], "results": []}
    for name in names:
        rows = SECTIONS[name]()
        record["results"] += [{"section": name, **row} for row in rows]
        record["sections_done"].append(name)
        atomic_write_json(path, record)
        print(f"{name}: done, {len(rows)} row(s) -> {path}", flush=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xferlab.benchmarks.gpu", description=__doc__.splitlines()[0])
    known = list(SECTIONS)
    parser.add_argument("names", nargs="*", default=known, help=f"sections to run (default: all of {known})")
    parser.add_argument("--out", type=Path, default=Path("docs/bench"))
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(known))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {known}")
    path = run(args.names, args.out)
    print(format_table(json.loads(path.read_text())["results"]))
    print(f"\nsaved to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
