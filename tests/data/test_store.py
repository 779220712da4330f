
import numpy as np
import pandas as pd
import pytest
import zarr

from tests.conftest import write_store
from xferlab.data.store import COMPLETE_MARKER, ImageStore, StoreError, StoreWriter
from xferlab.runtime.integrity import write_manifest


def test_round_trip_keeps_images_table_and_attributes(tmp_path):
    store = write_store(tmp_path / "s.zarr", n_per_class=3, classes=("x", "y", "z"))
    assert len(store) == 18
    assert store.channel_names == ["nucleus", "protein"]
    assert store.classes == ["x", "y", "z"]
    assert store.images.dtype == np.uint16
    assert store.read(0, 4).shape == (4, 2, 8, 8)
    assert list(store.samples["sample_id"][:2]) == ["x0_0", "x0_1"]
    assert store.labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    assert store.attrs["source"] == "test"
    expected_mean = store.read(0, 18).astype(float).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(store.channel_mean, expected_mean)


def test_fingerprint_is_stable_and_follows_content(tmp_path):
    a = write_store(tmp_path / "a.zarr", seed=0)
    b = write_store(tmp_path / "b.zarr", seed=0)
    c = write_store(tmp_path / "c.zarr", seed=1)
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "s.zarr"
    with pytest.raises(StoreError, match="incomplete"):
        with StoreWriter(path, n_samples=4, channel_names=["a"], image_size=(4, 4), dtype="uint8",
                         classes=["k"]) as writer:
            writer.append(np.zeros((2, 1, 4, 4), dtype=np.uint8))  # only 2 of 4 images
            writer.write_samples(pd.DataFrame({"sample_id": list("abcd"), "target": list("abcd"), "label": [0] * 4}))
    assert list(tmp_path.iterdir()) == []


def test_duplicated_sample_ids_are_refused(tmp_path):
    with pytest.raises(StoreError, match="duplicated sample ids") as err:
        with StoreWriter(tmp_path / "s.zarr", n_samples=3, channel_names=["a"], image_size=(4, 4),
                         dtype="uint8", classes=["k"]) as writer:
            writer.append(np.zeros((3, 1, 4, 4), dtype=np.uint8))
            writer.write_samples(pd.DataFrame({"sample_id": ["r", "s", "s"], "target": ["t", "u", "v"],
                                               "label": [0, 0, 0]}))
    message = str(err.value)
    assert str(tmp_path / "s.zarr") in message and "'s' at rows [1, 2]" in message  # the store, an example
    assert "give them distinct ids" in message  # and the fix
    assert list(tmp_path.iterdir()) == []


def test_nan_or_infinite_pixels_are_refused_naming_the_image(tmp_path):
    images = np.ones((4, 1, 4, 4), dtype=np.float32)
    images[3, 0, 1, 2] = np.nan
    for bad in (np.nan, np.inf):
        images[3, 0, 1, 2] = bad
        with pytest.raises(StoreError, match="image 3 .* NaN or infinite pixels") as err:
            with StoreWriter(tmp_path / "s.zarr", n_samples=4, channel_names=["a"], image_size=(4, 4),
                             dtype="float32", classes=["k"]) as writer:
                writer.append(images[:2])
                writer.append(images[2:])
        assert str(tmp_path / "s.zarr") in str(err.value) and "drop that image" in str(err.value)
        assert list(tmp_path.iterdir()) == []


def test_a_pixel_dtype_that_is_not_numeric_is_refused(tmp_path):
    for dtype in ("complex64", "U4", "bool"):
        with pytest.raises(StoreError, match=f"pixel dtype {np.dtype(dtype)} is not supported.*convert"):
            StoreWriter(tmp_path / "s.zarr", n_samples=1, channel_names=["a"], image_size=(2, 2), dtype=dtype,
                        classes=["k"])
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_while_writing_leaves_nothing_and_names_the_store(tmp_path, monkeypatch):
    import errno

    from xferlab.runtime.io import DiskFullError

    def no_space(self, key, value):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zarr.Array, "__setitem__", no_space)
    with pytest.raises(DiskFullError, match="disk full") as err:
        write_store(tmp_path / "s.zarr")
    assert err.value.errno == errno.ENOSPC
    assert str(tmp_path / "s.zarr") in str(err.value) and "paths.data_dir" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_wrong_block_shape_and_dtype_are_refused(tmp_path):
    with pytest.raises(StoreError, match="shape"):
        with StoreWriter(tmp_path / "s.zarr", n_samples=2, channel_names=["a", "b"], image_size=(4, 4),
                         dtype="uint8", classes=["k"]) as writer:
            writer.append(np.zeros((2, 1, 4, 4), dtype=np.uint8))
    with pytest.raises(StoreError, match="dtype"):
        with StoreWriter(tmp_path / "t.zarr", n_samples=2, channel_names=["a"], image_size=(4, 4),
                         dtype="uint8", classes=["k"]) as writer:
            writer.append(np.zeros((2, 1, 4, 4), dtype=np.float32))
    assert list(tmp_path.iterdir()) == []


def test_incomplete_store_is_refused(tmp_path):
    store = write_store(tmp_path / "s.zarr")
    (store.path / COMPLETE_MARKER).unlink()
    with pytest.raises(StoreError, match="incomplete image store"):
        ImageStore(store.path)


def test_missing_store_is_refused(tmp_path):
    with pytest.raises(StoreError, match="no image store"):
        ImageStore(tmp_path / "nope.zarr")


def test_store_from_a_newer_format_is_refused(tmp_path):
    store = write_store(tmp_path / "s.zarr")
    group = zarr.open_group(store.path, mode="r+")
    group.attrs["xferlab_store_version"] = 99
    write_manifest(store.path)  # as the newer xferlab would have
    with pytest.raises(StoreError, match="newer xferlab") as err:
        ImageStore(store.path)
    assert str(store.path) in str(err.value) and "store format 99" in str(err.value)
    assert "Upgrade xferlab or rebuild the store" in str(err.value)


def test_images_fingerprint_ignores_labels(tmp_path):
    def write(name, labels):
        with StoreWriter(tmp_path / name, n_samples=2, channel_names=["a"], image_size=(2, 2), dtype="uint8",
                         classes=["x", "y"]) as writer:
            writer.append(np.ones((2, 1, 2, 2), dtype=np.uint8))
            writer.write_samples(pd.DataFrame({"sample_id": ["s", "t"], "target": ["s", "t"], "label": labels}))
        return ImageStore(tmp_path / name)

    a, b = write("a.zarr", [0, 1]), write("b.zarr", [1, 1])
    assert a.images_fingerprint == b.images_fingerprint
    assert a.fingerprint != b.fingerprint


def test_label_sets_round_trip(tmp_path):
    sets = np.array([[1, 0], [1, 1], [0, 1]], dtype=np.uint8)
    with StoreWriter(tmp_path / "s.zarr", n_samples=3, channel_names=["a"], image_size=(2, 2), dtype="uint8",
                     classes=["x", "y"], attrs={"label_rule": "multilabel"}) as writer:
        writer.append(np.zeros((3, 1, 2, 2), dtype=np.uint8))
        writer.write_samples(pd.DataFrame({"sample_id": list("abc"), "target": list("abc"), "label": [0, 0, 1]}))
        writer.write_label_sets(sets)
    store = ImageStore(tmp_path / "s.zarr")
    assert store.label_rule == "multilabel"
    np.testing.assert_array_equal(store.label_sets, sets)


def chunk_files(store):
    return sorted(p for p in (store.path / "images" / "c").rglob("*") if p.is_file())


def test_a_store_records_a_manifest_and_opens_checked(tmp_path):
    from xferlab.runtime.integrity import manifest_problems

    store = write_store(tmp_path / "s.zarr", chunk_rows=4)
    assert (store.path / "MANIFEST.json").exists() and len(chunk_files(store)) == 4
    assert manifest_problems(store.path, "full") == []
    assert ImageStore(store.path, verify="full").fingerprint == store.fingerprint


@pytest.mark.parametrize("damage", ["delete", "truncate", "flip"])
def test_a_damaged_chunk_is_refused_on_open_naming_it(tmp_path, damage):
    from xferlab.data.store import StoreDamagedError
    from xferlab.runtime.integrity import verification

    store = write_store(tmp_path / "s.zarr", chunk_rows=4)
    chunk = chunk_files(store)[1]
    name = chunk.relative_to(store.path).as_posix()
    data = chunk.read_bytes()
    if damage == "delete":  # zarr would read the missing chunk as zeros, silently
        chunk.unlink()
    elif damage == "truncate":
        chunk.write_bytes(data[:-3])
    else:
        chunk.write_bytes(data[:10] + bytes([data[10] ^ 0xFF]) + data[11:])
        ImageStore(store.path)  # same size: the quick check on open passes; the full one does not
        with pytest.raises(StoreDamagedError, match=f"{name}: content changed"):
            ImageStore(store.path, verify="full")
    with pytest.raises(StoreDamagedError, match=f"damaged image store: {name}"):
        with verification("full"):
            ImageStore(store.path)


def test_a_store_written_before_manifests_opens_unchecked(tmp_path, caplog):
    store = write_store(tmp_path / "s.zarr", chunk_rows=4)
    (store.path / "MANIFEST.json").unlink()
    with caplog.at_level("INFO", logger="xferlab.runtime.integrity"):
        assert ImageStore(store.path, verify="full").fingerprint == store.fingerprint
        ImageStore(store.path)
    assert sum("no MANIFEST.json" in r.message for r in caplog.records) == 1  # said once


@pytest.mark.parametrize("n,chunk_rows", [(37, 8), (5, 256), (16, 8)])
def test_a_store_of_unknown_size_equals_the_same_store_written_with_its_size(tmp_path, n, chunk_rows):
    """`n_samples=None` (an importer that learns the size at the end): pixels compressed as they
    come, in blocks of any size; the same pixels, table, label sets and both fingerprints."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 5000, size=(n, 2, 12, 12)).astype(np.uint16)
    samples = pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "target": [f"t{i % 4}" for i in range(n)],
                            "label": rng.integers(-1, 3, size=n)})
    sets = (rng.random((n, 3)) > 0.5).astype(np.uint8)
    stores = []
    for size, blocks in ((n, [n]), (None, [3, 1, 7, 0, n])):
        path = tmp_path / f"store-{size}-{chunk_rows}.zarr"
        with StoreWriter(path, n_samples=size, channel_names=["a", "b"], image_size=(12, 12), dtype="uint16",
                         classes=["x", "y", "z"], attrs={"k": 1}, chunk_rows=chunk_rows) as writer:
            start = 0
            for block in blocks:
                stop = min(start + block, n)
                if stop > start:
                    writer.append(images[start:stop])
                start = stop
            assert writer.rows == n
            writer.write_samples(samples)
            writer.write_label_sets(sets)
        stores.append(ImageStore(path))
    known, unknown = stores
    assert unknown.fingerprint == known.fingerprint
    assert unknown.attrs["images_fingerprint"] == known.attrs["images_fingerprint"]
    assert np.array_equal(unknown.read(0, n), images) and unknown.samples.equals(known.samples)
    assert np.array_equal(unknown.label_sets, known.label_sets)
    np.testing.assert_allclose(unknown.channel_mean, known.channel_mean)


def test_a_store_of_unknown_size_checks_its_table_against_what_was_written(tmp_path):
    with pytest.raises(StoreError, match="sample table has 3 rows for 2 images"):
        with StoreWriter(tmp_path / "s.zarr", n_samples=None, channel_names=["a"], image_size=(4, 4),
                         dtype="uint16", classes=["x"]) as writer:
            writer.append(np.zeros((2, 1, 4, 4), np.uint16))
            writer.write_samples(pd.DataFrame({"sample_id": ["a", "b", "c"], "target": ["t"] * 3, "label": [0] * 3}))
    assert not (tmp_path / "s.zarr").exists()
