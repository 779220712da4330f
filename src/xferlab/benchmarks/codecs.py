"""Image store codecs and chunk shapes, measured for what extraction needs: decode speed per core.

Pixels are SynthCell OpenCell-domain crops (uint16, nucleus + protein, cells on a dark background,
camera noise), rendered once per size and tiled to fill the chunks. For each codec of
`xferlab.data.codecs.CODECS` and crop size:
- `codec_decode/<size>px/<codec>`: decoded GB/s per core of one chunk (zarr's codec pipeline,
  one thread: blosc without its own threads), from the process's CPU time, best of a few rounds;
- the compression ratio and encode GB/s per core (what building a store costs);
- `store_read/<size>px/<codec>`: what a reader process does per chunk: read the file, check its
  sha256 against the manifest, decode (`StoreBlocks` over the whole store, no workers), in
  decoded GB/s per core.
`chunk_rows/<size>px/<codec>/<rows>`: the same store read with other chunk heights (images per chunk).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numcodecs
import numpy as np
import pandas as pd
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.array_spec import ArrayConfig, ArraySpec
from zarr.core.dtype import parse_dtype

from xferlab.data.codecs import CODECS, DEFAULT_CODEC, compressors
from xferlab.data.store import ImageStore, StoreWriter
from xferlab.embeddings.extractor import StoreBlocks

SIZES = (128, 224)
CHUNK_ROWS = 256


def synthcell_crops(size: int, n: int, seed: int = 0) -> np.ndarray:
    """`n` uint16 OpenCell-domain SynthCell crops `(n, 2, size, size)`: 32 rendered, tiled to `n`."""
    from xferlab.data.synthcell.domains import opencell_targets
    from xferlab.data.synthcell.source import render_target

    targets = opencell_targets()
    channels = ("nucleus", "protein")
    rendered = np.concatenate([render_target((i, targets[i], 0.0, channels, size, 4, 2, seed)) for i in range(8)])
    return rendered[np.arange(n) % len(rendered)]


def cpu_seconds(fn, rounds: int) -> float:
    """Best process CPU time of `rounds` calls (all threads: the CPU time a core spends)."""
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return max(best, 1e-9)


def chunk_codec_pipeline(name: str, chunk: np.ndarray):
    """zarr's codec pipeline for one `chunk` written with codec `name`, and the chunk's spec."""
    array = zarr.create_array(store={}, shape=chunk.shape, chunks=chunk.shape, dtype=chunk.dtype,
                              compressors=compressors(name))
    spec = ArraySpec(shape=chunk.shape, dtype=parse_dtype(chunk.dtype, zarr_format=3), fill_value=0,
                     config=ArrayConfig.from_dict({}), prototype=default_buffer_prototype())
    return array.async_array.codec_pipeline, spec


def measure_codec(name: str, chunk: np.ndarray, rounds: int) -> dict[str, Any]:
    pipeline, spec = chunk_codec_pipeline(name, chunk)
    buffer = default_buffer_prototype().nd_buffer.from_numpy_array(chunk)
    encode = lambda: asyncio.run(pipeline.encode([(buffer, spec)]))  # noqa: E731
    (encoded,) = encode()
    decode = lambda: asyncio.run(pipeline.decode([(encoded, spec)]))  # noqa: E731
    (decoded,) = decode()
    if not np.array_equal(decoded.as_numpy_array(), chunk):
        raise AssertionError(f"codec {name} did not give back the pixels it encoded")
    size = chunk.nbytes
    return {"ratio": round(size / len(encoded), 3),
            "decode_gbps_per_core": round(size / cpu_seconds(decode, rounds) / 1e9, 3),
            "encode_gbps_per_core": round(size / cpu_seconds(encode, max(1, rounds // 2)) / 1e9, 3)}


def read_gbps(store: ImageStore, rounds: int) -> float:
    """Decoded GB/s per core of reading the whole store as extraction does (read, check, decode)."""
    def read():
        for _ in StoreBlocks(store, store.chunk_rows):
            pass
    return store.images.nbytes / cpu_seconds(read, rounds) / 1e9


def write_store(path: Path, images: np.ndarray, codec: str, chunk_rows: int) -> ImageStore:
    n = len(images)
    with StoreWriter(path, n_samples=n, channel_names=["nucleus", "protein"], image_size=images.shape[-2:],
                     dtype=images.dtype, classes=["a"], chunk_rows=chunk_rows, codec=codec) as writer:
        writer.append(images)
        writer.write_samples(pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "target": "t", "label": 0}))
    return ImageStore(path)


def bench_codecs(sizes: Sequence[int] = SIZES, codecs: Sequence[str] = tuple(CODECS), chunk_rows: int = CHUNK_ROWS,
                 chunks: int = 4, rounds: int = 3, other_rows: Sequence[int] = (64, 1024)) -> list[dict[str, Any]]:
    numcodecs.blosc.set_nthreads(1)  # per core: blosc's own threads would hide the cost
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            images = synthcell_crops(size, chunk_rows * chunks)
            for name in codecs:
                codec = measure_codec(name, images[:chunk_rows], rounds)
                store = write_store(Path(tmp) / f"{size}-{name}.zarr", images, name, chunk_rows)
                common = {"codec": name, "crop_px": size, "chunk_rows": chunk_rows,
                          "chunk_mib": round(images[:chunk_rows].nbytes / 2**20, 1), **codec}
                rows.append({"benchmark": f"codec_decode/{size}px/{name}", "value": codec["decode_gbps_per_core"],
                             "unit": "GB/s/core", **common})
                rows.append({"benchmark": f"store_read/{size}px/{name}", "value": round(read_gbps(store, rounds), 3),
                             "unit": "GB/s/core", **common})
            for rows_per_chunk in other_rows:
                store = write_store(Path(tmp) / f"{size}-rows{rows_per_chunk}.zarr", images, DEFAULT_CODEC,
                                    rows_per_chunk)
                rows.append({"benchmark": f"chunk_rows/{size}px/{DEFAULT_CODEC}/{rows_per_chunk}",
                             "value": round(read_gbps(store, rounds), 3), "unit": "GB/s/core",
                             "codec": DEFAULT_CODEC, "crop_px": size, "chunk_rows": rows_per_chunk})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The codecs as docs/performance.md shows them: compression ratio, decode and read GB/s per core
    for each crop size, then the default codec read in other chunk heights."""
    by = {r["benchmark"]: r for r in rows}
    sizes = sorted({r["crop_px"] for r in rows})
    codecs = list(dict.fromkeys(r["codec"] for r in rows if r["benchmark"].startswith("codec_decode/")))
    px = " / ".join(map(str, sizes))
    lines = [f"| codec | ratio ({px} px) | " + " | ".join(f"decode {s} px" for s in sizes) + " | "
             + " | ".join(f"read {s} px" for s in sizes) + " |", "|---" * (2 + 2 * len(sizes)) + "|"]
    for codec in codecs:
        decode = [by[f"codec_decode/{s}px/{codec}"] for s in sizes]
        read = [by[f"store_read/{s}px/{codec}"] for s in sizes]
        name = f"**`{codec}` (default)**" if codec == DEFAULT_CODEC else f"`{codec}`"
        lines.append(f"| {name} | " + " / ".join(f"{d['ratio']:.2f}" for d in decode) + " | "
                     + " | ".join(f"{d['value']:.2f}" for d in decode) + " | "
                     + " | ".join(f"{r['value']:.2f}" for r in read) + " |")
    heights = [r for r in rows if r["benchmark"].startswith("chunk_rows/")]
    if heights:
        lines += ["", "Read GB/s per core in other chunk heights (images per chunk; the table's are "
                  f"{rows[0]['chunk_rows']}): " + "; ".join(
                      f"{r['crop_px']} px `{r['codec']}` x {r['chunk_rows']}: {r['value']:.2f}" for r in heights) + "."]
    return "\n".join(lines) + "\n"
