"""Every file of an image store is checked against its manifest's sha256 as it is read: a same-size
change (a flipped bit, a chunk of another store) passes the quick check on open but stops the read,
naming the store, the chunk and its rows."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from tests.conftest import write_store
from xferlab.data.store import ImageStore, StoreDamagedError


def chunk(store, i):
    return store.path / "images" / "c" / str(i) / "0" / "0" / "0"


def flip_bit(path, offset=None, bit=0):
    data = bytearray(path.read_bytes())
    offset = len(data) // 2 if offset is None else offset
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def test_a_flipped_bit_passes_the_quick_open_but_stops_the_read_naming_chunk_and_rows(tmp_path):
    # uint8 noise does not compress: zstd keeps the bytes raw, so a flipped bit decodes silently
    store = write_store(tmp_path / "s.zarr", chunk_rows=4, dtype="uint8")
    clean = store.read(0, len(store))
    flip_bit(chunk(store, 1))
    unchecked = np.asarray(zarr.open_array(store.path / "images", mode="r")[:])
    assert (unchecked != clean).sum() == 1  # what plain zarr reads: one wrong pixel, no error

    reopened = ImageStore(store.path)  # verify=quick: sizes match
    with pytest.raises(StoreDamagedError) as err:
        reopened.read(0, len(store))
    message = str(err.value)
    assert f"{store.path} is a damaged image store: images/c/1/0/0/0 (image chunk 1: rows 4-7" in message
    ids = store.samples["sample_id"]
    assert f"sample ids {ids[4]} to {ids[7]}" in message and "does not match the sha256" in message
    assert "Restore the store from a backup, or delete it and rerun to rebuild it" in message
    np.testing.assert_array_equal(reopened.read(0, 4), clean[:4])  # other chunks still read
    with pytest.raises(StoreDamagedError, match="image chunk 1"):
        reopened.images[5]  # every read path goes through the check


def test_a_chunk_of_another_store_with_the_same_size_is_refused(tmp_path):
    store = write_store(tmp_path / "a.zarr", chunk_rows=4, dtype="uint8", seed=0)
    other = write_store(tmp_path / "b.zarr", chunk_rows=4, dtype="uint8", seed=1)
    assert chunk(store, 2).stat().st_size == chunk(other, 2).stat().st_size
    chunk(store, 2).write_bytes(chunk(other, 2).read_bytes())
    reopened = ImageStore(store.path)
    assert reopened.read(0, 8).shape[0] == 8
    with pytest.raises(StoreDamagedError, match=r"images/c/2/0/0/0 \(image chunk 2: rows 8-11"):
        reopened.read(8, 12)


def test_a_chunk_deleted_or_truncated_after_opening_stops_the_read(tmp_path):
    store = write_store(tmp_path / "s.zarr", chunk_rows=4, dtype="uint8")
    chunk(store, 0).unlink()  # zarr alone would read the missing chunk as zeros
    with pytest.raises(StoreDamagedError, match=r"images/c/0/0/0/0 \(image chunk 0: rows 0-3.*\) is missing"):
        store.read(0, 4)
    chunk(store, 3).write_bytes(chunk(store, 3).read_bytes()[:-7])
    with pytest.raises(StoreDamagedError, match="images/c/3/0/0/0 .* does not match the sha256"):
        store.read(12, 16)


def test_a_store_without_a_manifest_reads_unchecked_and_says_so_once(tmp_path, caplog):
    store = write_store(tmp_path / "s.zarr", chunk_rows=4, dtype="uint8")
    clean = store.read(0, len(store))
    (store.path / "MANIFEST.json").unlink()
    flip_bit(chunk(store, 1))
    with caplog.at_level("WARNING", logger="xferlab.data.store"):
        old = ImageStore(store.path)
        ImageStore(store.path)
    assert old.digests is None and old.image_digests() is None
    assert (old.read(0, len(store)) != clean).sum() == 1  # as before manifests: nothing to check against
    said = [r.message for r in caplog.records if "records no per-chunk checksums" in r.message]
    assert len(said) == 1 and str(store.path) in said[0]
