"""How an image store compresses its pixel chunks: named codecs a `StoreWriter` can write.

Readers need no setting: zarr records the codec in `images/zarr.json`, so a store written with any
of these (or with zarr's default, `zstd` level 0 without shuffle, which stores written before
codecs were chosen use) reads the same pixels. The default is the one that decodes fastest per core
at a compression that keeps stores small (`xferlab.benchmarks.codecs`; the reasoning is in
docs/performance.md).
"""

from __future__ import annotations

from typing import Any

from zarr.codecs import BloscCodec, ZstdCodec

# name -> (kind, options); kind "blosc": byte shuffle then the named compressor, "zstd": zarr's
# zstd codec on the raw bytes, "none": uncompressed
CODECS: dict[str, tuple[str, dict[str, Any]]] = {
    "none": ("none", {}),
    "zstd": ("zstd", {"level": 0}),  # zarr's default, what stores written before codecs were chosen use
    "blosc-lz4-1": ("blosc", {"cname": "lz4", "clevel": 1}),
    "blosc-lz4-5": ("blosc", {"cname": "lz4", "clevel": 5}),
    "blosc-lz4-9": ("blosc", {"cname": "lz4", "clevel": 9}),
    "blosc-zstd-1": ("blosc", {"cname": "zstd", "clevel": 1}),
    "blosc-zstd-3": ("blosc", {"cname": "zstd", "clevel": 3}),
    "blosc-zstd-5": ("blosc", {"cname": "zstd", "clevel": 5}),
}
# lz4 with byte shuffle: 2.3-3x zstd's decode speed per core at ~the same size; level 9 decodes
# and compresses a little better than 5, for ~10 % more encoding time (stores are read far more
# often than written)
DEFAULT_CODEC = "blosc-lz4-9"


def compressors(name: str) -> list | None:
    """The zarr `compressors` argument for codec `name` (None: uncompressed)."""
    if name not in CODECS:
        raise ValueError(f"unknown image store codec {name!r}; choose one of {list(CODECS)}")
    kind, options = CODECS[name]
    if kind == "none":
        return None
    if kind == "zstd":
        return [ZstdCodec(**options)]
    # blocksize 0: blosc's own choice; typesize is filled in from the array's dtype
    return [BloscCodec(shuffle="shuffle", blocksize=0, **options)]
