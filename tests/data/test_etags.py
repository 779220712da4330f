"""The multipart ETag arithmetic of `xferlab.data.etags`, against the definition written out."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from xferlab.data import etags


def by_definition(data: bytes, sizes: list[int]) -> str:
    bounds = np.cumsum([0, *sizes]).tolist()
    digests = b"".join(hashlib.md5(data[a:b]).digest() for a, b in zip(bounds[:-1], bounds[1:]))
    return f"{hashlib.md5(digests).hexdigest()}-{len(sizes)}"


def test_the_etag_is_the_same_however_the_stream_is_cut(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, 10_000, dtype=np.uint8).tobytes()
    for sizes in ([4096, 4096, 1808], [10_000], [3000, 5000, 2000]):
        want = by_definition(data, sizes)
        for cut in (1, 7, 4096, 10_000):
            etag = etags.MultipartEtag(sizes)
            for i in range(0, len(data), cut):
                etag.update(data[i:i + cut])
            assert etag.hexdigest() == want
        (tmp_path / "f").write_bytes(data)
        assert etags.file_etag(tmp_path / "f", sizes) == want
    flipped = bytes([data[0] ^ 1]) + data[1:]
    assert by_definition(flipped, [4096, 4096, 1808]) != by_definition(data, [4096, 4096, 1808])


def test_part_layouts():
    assert etags.parts('"0123456789abcdef0123456789abcdef-3"') == 3
    assert etags.parts("0123456789abcdef0123456789abcdef") is None and etags.parts("") is None
    assert etags.uniform_part_sizes(10, 4, 3) == [4, 4, 2]
    assert etags.uniform_part_sizes(12, 4, 3) == [4, 4, 4]
    assert etags.uniform_part_sizes(8, 4, 3) is None and etags.uniform_part_sizes(13, 4, 3) is None
    asked = []
    assert etags.part_sizes(14, 3, 4, lambda n: asked.append(n) or {2: 6, 3: 4}[n]) == [4, 6, 4] and asked == [2, 3]
    with pytest.raises(ValueError):
        etags.MultipartEtag([4, 0])
