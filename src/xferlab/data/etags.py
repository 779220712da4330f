"""S3 ETags as checksums.

A single-part upload's ETag is the md5 of its bytes. A multipart upload's is
``md5(md5(part 1) + md5(part 2) + ... ) + "-<number of parts>"`` (binary digests concatenated),
so it can be recomputed from the bytes only with the size of every part. Uploaders cut every
part but the last to one size; `part_sizes` takes that layout when the first part's size and the
count fit the object's size, and otherwise asks for each part's size. Parts of unequal sizes can
still fit one size (5 + 6 + 0.6 MiB looks like 5 + 5 + 1.6): `settle` asks for every part's size
before a mismatch computed with an assumed layout is believed.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Callable

_MULTIPART = re.compile(r"^[0-9a-f]{32}-([1-9][0-9]*)$")
BLOCK = 1 << 20


def parts(etag: str) -> int | None:
    """The number of parts a multipart ETag (`<32 hex>-<n>`) declares; None for any other ETag."""
    match = _MULTIPART.match(etag.strip('"').lower())
    return int(match[1]) if match else None


def uniform_part_sizes(size: int, part_size: int, count: int) -> list[int] | None:
    """`count` parts of `part_size` bytes, the last one shorter, adding up to `size`; None when
    `size` cannot be cut that way (the uploader used parts of different sizes)."""
    if count < 1 or part_size < 1 or not (count - 1) * part_size < size <= count * part_size:
        return None
    return [part_size] * (count - 1) + [size - (count - 1) * part_size]


def part_sizes(size: int, count: int, first: int, size_of_part: Callable[[int], int]) -> list[int]:
    """The size of each of `count` parts of an object of `size` bytes whose first part has `first`
    bytes; `size_of_part(n)` (n from 2) is asked only when the parts cannot all share one size."""
    uniform = uniform_part_sizes(size, first, count)
    return uniform if uniform is not None else [first] + [size_of_part(n) for n in range(2, count + 1)]


class MultipartEtag:
    """The multipart ETag of the bytes fed to `update`, cut into parts of `sizes` bytes (bytes
    beyond the last boundary belong to the last part, so a longer stream never matches)."""

    def __init__(self, sizes: list[int]):
        if not sizes or any(s < 1 for s in sizes):
            raise ValueError(f"part sizes must be positive, got {sizes}")
        self.sizes = list(sizes)
        self._digests: list[bytes] = []
        self._part = hashlib.md5()
        self._left = self.sizes[0]

    def update(self, data: bytes) -> None:
        view = memoryview(data)
        while len(view):
            last = len(self._digests) == len(self.sizes) - 1
            if self._left == 0 and not last:
                self._digests.append(self._part.digest())
                self._part, self._left = hashlib.md5(), self.sizes[len(self._digests)]
                last = len(self._digests) == len(self.sizes) - 1
            take = len(view) if last else min(self._left, len(view))
            self._part.update(view[:take])
            self._left -= take
            view = view[take:]

    def hexdigest(self) -> str:
        digests = self._digests + [self._part.digest()]
        return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(self.sizes)}"


def settle(path: Path, etag: str, computed: str, sizes: list[int],
           exact_sizes: Callable[[], list[int]]) -> tuple[str, list[int]]:
    """`computed` (the multipart ETag of the file at `path` cut into `sizes`) and `sizes`, unless it
    differs from `etag` and the parts' real sizes (`exact_sizes()`) are others: then the file's
    ETag cut into those, and those."""
    if computed == etag.strip('"').lower():
        return computed, sizes
    exact = exact_sizes()
    return (computed, sizes) if exact == sizes else (file_etag(path, exact), exact)


def file_etag(path: Path, sizes: list[int]) -> str:
    """The multipart ETag of the file at `path` cut into parts of `sizes` bytes."""
    etag = MultipartEtag(sizes)
    with open(path, "rb") as f:
        while chunk := f.read(BLOCK):
            etag.update(chunk)
    return etag.hexdigest()


def remote_part_sizes(fs, key: str, size: int, etag: str, every_part: bool = False) -> list[int]:
    """The size of each part of the multipart S3 object `key` (`bucket/path`, listed with `size`
    bytes and `etag`), read with s3fs `fs`: HEAD with PartNumber=1 gives the first part's size
    (its ContentLength) and the number of parts (PartsCount); the others are asked for when they
    cannot share its size, or with `every_part`. A TransferError when the server does not say, or
    says something the listing contradicts; FileNotFoundError when it is gone."""
    from xferlab.runtime.transfer import TransferError

    count = parts(etag)
    if count is None:
        raise ValueError(f"{etag!r} is not a multipart ETag")
    cannot = f"s3://{key}: cannot verify its multipart ETag {etag}"
    bucket, path = key.split("/", 1)

    def head(n: int) -> dict:
        try:
            return fs.call_s3("head_object", Bucket=bucket, Key=path, PartNumber=n)
        except FileNotFoundError:
            raise
        except Exception as err:  # noqa: BLE001 - botocore / aiohttp errors: one clear message
            raise TransferError(f"{cannot}: HEAD with PartNumber={n} failed ({type(err).__name__}: {err}); "
                                "nothing was kept") from err

    first = head(1)
    told = first.get("PartsCount")
    if not told:
        raise TransferError(f"{cannot}: the server gives no PartsCount for HEAD with PartNumber=1, so the part "
                            "size is unknown and the ETag cannot be recomputed; the file is not kept unverified. "
                            "Use an endpoint that supports PartNumber (AWS S3 does)")
    if int(told) != count:
        raise TransferError(f"{cannot}: the listing's ETag has {count} parts, the server now reports {told}: it "
                            "changed on the server since it was listed; nothing was kept. Run the command again")
    first_size, size_of_part = int(first["ContentLength"]), lambda n: int(head(n)["ContentLength"])
    if every_part:
        sizes = [first_size] + [size_of_part(n) for n in range(2, count + 1)]
    else:
        sizes = part_sizes(size, count, first_size, size_of_part)
    if sum(sizes) != size:
        raise TransferError(f"{cannot}: its parts add up to {sum(sizes):,} bytes, the listing says {size:,}: it "
                            "changed on the server since it was listed; nothing was kept. Run the command again")
    return sizes
