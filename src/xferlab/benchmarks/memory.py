"""Peak memory of extraction against the store's size: the extraction runs in a fresh process on
a store of N images and on one of 8N; the growth of its peak resident memory during extraction
(above what it held before; Linux's peak counter is reset just before) must not grow with N. The
larger store holds several times that memory, decoded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from xferlab.benchmarks.common import synthetic_store

SIZE = 128            # px; 2 channels of uint16 = 64 KiB per decoded image
SMALL, LARGE = 1024, 8192
GROWTH_TARGET = 1.10  # peak growth on the large store over the small one

CHILD = """
import json, logging, sys
from pathlib import Path
from omegaconf import OmegaConf
from xferlab.backbones.preprocess import Preprocessor
from xferlab.benchmarks.common import compose_config, extract_trainer
from xferlab.runtime.building import build
from xferlab.data.store import ImageStore
from xferlab.embeddings.extractor import ensure_embeddings
logging.disable(logging.WARNING)

def status_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")

store_path, cache_dir, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
cfg = compose_config(overrides + ["logger=csv"])
store = ImageStore(store_path)
backbone = build(cfg.backbone)
adapter = build(cfg.channels, dataset_channels=store.channel_names, model_channels=backbone.in_channels)
pre = Preprocessor.for_store(OmegaConf.to_container(cfg.backbone.preprocess), store)
extract_trainer()  # Trainer set-up, once, before the baseline
Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
before = status_kib("VmRSS")
_, info = ensure_embeddings(store, backbone, adapter, pre, cache_dir, extract_trainer, batch_size=64)
print(json.dumps({"before_kib": before, "peak_kib": status_kib("VmHWM"), "seconds": info["extract_seconds"]}))
"""


def peak_during_extraction(store: Path, cache: Path, overrides: list[str]) -> dict[str, Any]:
    # glibc serves large arrays from its heap once a freed one raised its mmap threshold, and then
    # keeps the pages: a fixed threshold makes resident memory follow what is live.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(store), str(cache), *overrides],
                         capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"extraction child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_extraction_memory(overrides: tuple[str, ...] = ("backbone=pixels",), small: int = SMALL,
                            large: int = LARGE, size: int = SIZE) -> list[dict[str, Any]]:
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (small, large):
            store = synthetic_store(Path(tmp) / f"store-{n}.zarr", n, size)
            runs[n] = peak_during_extraction(store.path, Path(tmp) / f"cache-{n}", list(overrides))
    extra = {n: max(r["peak_kib"] - r["before_kib"], 0) / 1024 for n, r in runs.items()}  # MiB
    decoded_large = large * 2 * size * size * 2 / 2**20
    growth = extra[large] / max(extra[small], 1.0)
    return [{
        "benchmark": "extraction_memory/peak_growth", "value": round(growth, 3), "unit": "ratio",
        "target": f"<={GROWTH_TARGET}", "meets_target": bool(growth <= GROWTH_TARGET),
        "backbone": list(overrides), "image_size": size, "images_small": small, "images_large": large,
        "peak_extra_mib_small": round(extra[small], 1), "peak_extra_mib_large": round(extra[large], 1),
        "rss_before_mib": round(runs[large]["before_kib"] / 1024, 1),
        "store_decoded_mib_large": round(decoded_large, 1),
        "store_over_peak_extra": round(decoded_large / max(extra[large], 1.0), 1),
    }]
