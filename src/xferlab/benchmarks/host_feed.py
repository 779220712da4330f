"""How many images per second the host can feed a device, per core: what predicts the GPU figure
on a machine with more (or fewer) cores than the one measured.

With a GPU, extraction reads the store in DataLoader workers and the main process hands batches
to the device. Two costs, each in images per CPU-second (process CPU time, so other work on the
machine does not count against it), best of a few rounds:
- `host_feed/reader/<size>px/<codec>`: one reader (a worker's work): read a block of chunk files,
  check each against its sha256, decode, and move the block to shared memory as the DataLoader
  does to send it to the main process;
- `host_feed/main/<size>px`: the main process's copy of each batch into a reused staging buffer
  (pinned on CUDA: `xferlab.embeddings.transfer.StagedCopies`).
`predicted_images_per_s` for a machine of `cores` cores: `auto` workers (cores - 2) times the
reader rate, capped by the main process's rate.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

import numcodecs
import torch

from xferlab.benchmarks.codecs import cpu_seconds, synthcell_crops, write_store
from xferlab.data.codecs import DEFAULT_CODEC
from xferlab.data.store import default_chunk_rows
from xferlab.embeddings.extractor import StoreBlocks, resolve_workers

SIZES = (128, 224)
CODECS = (DEFAULT_CODEC, "zstd")  # the default, and what stores written before it use
PREDICT_FOR = (8, 16, 32)
MAIN_REPEATS = 20  # cores of the machines the feed is predicted for


def reader_work(store, batch_size: int):
    def read():
        for _, images in StoreBlocks(store, batch_size):
            images.share_memory_()  # per batch view: the block's storage moves once, as a worker's does
    return read


def main_work(batches: list[torch.Tensor], repeats: int):
    staging = torch.empty_like(batches[0])

    def copy():
        for _ in range(repeats):  # a copy takes milliseconds: repeated to be timed
            for batch in batches:
                staging[: len(batch)].copy_(batch)
    return copy


def bench_host_feed(sizes: Sequence[int] = SIZES, codecs: Sequence[str] = CODECS, n: int = 1024,
                    batch_size: int = 256, rounds: int = 3) -> list[dict[str, Any]]:
    numcodecs.blosc.set_nthreads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            images = synthcell_crops(size, n)
            chunk_rows = default_chunk_rows(images[0].nbytes)
            main_rate = None
            for codec in codecs:
                store = write_store(Path(tmp) / f"{size}-{codec}.zarr", images, codec, chunk_rows)
                reader_rate = round(n / cpu_seconds(reader_work(store, batch_size), rounds))
                if main_rate is None:
                    batches = [batch for _, batch in StoreBlocks(store, batch_size)]
                    main_rate = round(n * MAIN_REPEATS / cpu_seconds(main_work(batches, MAIN_REPEATS), rounds))
                    rows.append({"benchmark": f"host_feed/main/{size}px", "value": main_rate,
                                 "unit": "images/s/core", "crop_px": size, "batch_size": batch_size})
                predicted = {str(cores): min(resolve_workers("auto", False, cores=cores) * reader_rate, main_rate)
                             for cores in PREDICT_FOR}
                rows.append({"benchmark": f"host_feed/reader/{size}px/{codec}", "value": reader_rate,
                             "unit": "images/s/core", "crop_px": size, "codec": codec, "chunk_rows": chunk_rows,
                             "batch_size": batch_size, "decoded_gbps_per_core": round(reader_rate * images[0].nbytes / 1e9, 3),
                             "predicted_images_per_s": predicted})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """Images per CPU-second of a reader per codec and of the main process, per crop size, and the
    feed they predict for machines of PREDICT_FOR cores."""
    sizes = sorted({r["crop_px"] for r in rows})
    readers = [r for r in rows if r["benchmark"].startswith("host_feed/reader/")]
    codecs = list(dict.fromkeys(r["codec"] for r in readers))
    cores = sorted(readers[0]["predicted_images_per_s"], key=int)
    lines = ["| stored crops | " + " | ".join(f"reader, `{c}`" for c in codecs) + " | main process | "
             + " | ".join(f"predicted, {n} cores, `{codecs[0]}`" for n in cores) + " |",
             "|---" * (2 + len(codecs) + len(cores)) + "|"]
    for size in sizes:
        reader = {r["codec"]: r for r in readers if r["crop_px"] == size}
        main = next(r for r in rows if r["benchmark"] == f"host_feed/main/{size}px")
        lines.append(f"| {size} px | " + " | ".join(f"{reader[c]['value']:,}" for c in codecs)
                     + f" | {main['value']:,} | "
                     + " | ".join(f"{reader[codecs[0]]['predicted_images_per_s'][n]:,}" for n in cores) + " |")
    return "\n".join(lines) + "\n"
