import pickle

import numpy as np
import pytest

from xferlab.embeddings.cache import CacheError, EmbeddingCache


SPEC = {"backbone": {"weights_sha256": "abc"}, "channels": {"strategy": "natural"},
        "preprocess": {"input_size": 64}, "precision": "32-true", "images_fingerprint": "f", "n_samples": 5}


def test_key_changes_with_every_input():
    base = EmbeddingCache("/tmp", SPEC).key
    for part, value in [("backbone", {"weights_sha256": "abd"}), ("channels", {"strategy": "replicate"}),
                        ("preprocess", {"input_size": 32}), ("precision", "bf16-mixed"),
                        ("images_fingerprint", "g"), ("dtype", "float16")]:
        assert EmbeddingCache("/tmp", {**SPEC, part: value}).key != base, part
    assert EmbeddingCache("/tmp", dict(reversed(list(SPEC.items())))).key == base


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="extract.dtype='int8'"):
        EmbeddingCache("/tmp", {**SPEC, "dtype": "int8"})


def test_build_publishes_a_complete_entry(tmp_path):
    cache = EmbeddingCache(tmp_path, SPEC)
    values = np.arange(15, dtype=np.float32).reshape(5, 3)
    with cache.build(5, 3, chunk_rows=2) as writer:
        writer.write(np.arange(0, 2), values[:2])
        writer.write(np.arange(2, 5), values[2:])
    assert cache.is_complete()
    np.testing.assert_array_equal(cache.load(), values)
    assert not (cache.path / "written").exists()


def test_rows_may_arrive_in_any_order_from_several_writers(tmp_path):
    """Like DDP ranks: each writer (a pickled copy, as sent to another process) writes its own rows."""
    cache = EmbeddingCache(tmp_path, {**SPEC, "dtype": "float16"})
    values = np.arange(15, dtype=np.float32).reshape(5, 3) / 4
    with cache.build(5, 3, chunk_rows=2) as writer:
        rank0 = pickle.loads(pickle.dumps(writer.renamed("rank-0")))
        rank1 = pickle.loads(pickle.dumps(writer.renamed("rank-1")))
        rank1.write(np.array([3, 2]), values[[3, 2]])
        rank0.write(np.array([4]), values[[4]])
        rank0.write(np.array([1]), values[[1]])
        rank0.write(np.array([0]), values[[0]])
        assert rank0.close() == [0, 2] and rank1.close() == [1]
    loaded = cache.load()
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, values.astype(np.float16).astype(np.float32))


def test_interrupted_build_leaves_nothing(tmp_path):
    cache = EmbeddingCache(tmp_path, SPEC)
    with pytest.raises(RuntimeError, match="boom"):
        with cache.build(5, 3, chunk_rows=2) as writer:
            writer.write(np.arange(0, 2), np.zeros((2, 3)))
            raise RuntimeError("boom")
    assert not cache.is_complete()
    assert [p for p in tmp_path.iterdir()] == []


def test_missing_or_repeated_rows_are_errors(tmp_path):
    cache = EmbeddingCache(tmp_path, SPEC)
    with pytest.raises(CacheError, match="chunk 1 incomplete: 1 of 2"):
        with cache.build(5, 3, chunk_rows=2) as writer:
            writer.write(np.arange(0, 3), np.zeros((3, 3)))
    with pytest.raises(CacheError, match="1 of 3 chunks of 2 rows never written"):
        with cache.build(5, 3, chunk_rows=2) as writer:
            writer.write(np.arange(0, 4), np.zeros((4, 3)))
    with pytest.raises(CacheError, match="row 1 written twice"):
        with cache.build(5, 3, chunk_rows=2) as writer:
            writer.write(np.array([1]), np.zeros((1, 3)))
            writer.write(np.array([1]), np.zeros((1, 3)))
    with pytest.raises(CacheError, match="written twice"):  # by two writers
        with cache.build(5, 3, chunk_rows=2) as writer:
            writer.renamed("a").write(np.arange(0, 2), np.zeros((2, 3)))
            a, b = writer.renamed("a"), writer.renamed("b")
            a.write(np.arange(0, 5), np.zeros((5, 3)))
            b.write(np.arange(0, 2), np.zeros((2, 3)))
            a.close(), b.close()
    with pytest.raises(CacheError, match="outside 0..4"):
        with cache.build(5, 3, chunk_rows=2) as writer:
            writer.write(np.array([5]), np.zeros((1, 3)))
    assert not cache.is_complete()
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_while_building_leaves_nothing_and_a_later_build_succeeds(tmp_path, monkeypatch):
    import errno

    import zarr

    from xferlab.runtime.io import DiskFullError

    cache = EmbeddingCache(tmp_path, SPEC)
    values = np.arange(15, dtype=np.float32).reshape(5, 3)

    def no_space(self, key, value):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(zarr.Array, "__setitem__", no_space)  # the embedding chunks' write
        with pytest.raises(DiskFullError, match="disk full") as err:
            with cache.build(5, 3, chunk_rows=2) as writer:
                writer.write(np.arange(5), values)
    message = str(err.value)
    assert err.value.errno == errno.ENOSPC and str(cache.path) in message and "paths.cache_dir" in message
    assert not cache.is_complete() and list(tmp_path.iterdir()) == []  # no entry, no temporary folder

    with monkeypatch.context() as patch:  # the disk fills up while the finished entry is published
        patch.setattr("xferlab.runtime.io.os.rename", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
        with pytest.raises(DiskFullError, match=str(cache.path)):
            with cache.build(5, 3, chunk_rows=2) as writer:
                writer.write(np.arange(5), values)
    assert list(tmp_path.iterdir()) == []

    with cache.build(5, 3, chunk_rows=2) as writer:  # space again: the next run builds the entry
        writer.write(np.arange(5), values)
    np.testing.assert_array_equal(cache.load(), values)


def test_nan_embeddings_are_never_cached_nor_loaded(tmp_path):
    import zarr

    cache = EmbeddingCache(tmp_path, SPEC)
    values = np.ones((5, 3), dtype=np.float32)
    values[3, 1] = np.nan
    with pytest.raises(CacheError, match=r"NaN or infinite embeddings for rows \[3\]"):
        with cache.build(5, 3, chunk_rows=2) as writer:
            writer.write(np.arange(5), values)
    assert list(tmp_path.iterdir()) == []
    half = EmbeddingCache(tmp_path, {**SPEC, "dtype": "float16"})
    with pytest.raises(CacheError, match=r"rows \[1\] overflow extract.dtype=float16 .* use extract.dtype=float32"):
        with half.build(2, 3, chunk_rows=2) as writer:
            writer.write(np.arange(2), np.array([[1, 2, 3], [1e6, 0, 0]], dtype=np.float32))
    assert list(tmp_path.iterdir()) == []
    # an entry written before these checks: refused on load, naming the entry and the fix
    with cache.build(5, 3, chunk_rows=2) as writer:
        writer.write(np.arange(5), np.ones((5, 3), dtype=np.float32))
    zarr.open_array(cache.path / "embeddings", mode="r+")[4, 0] = np.inf
    with pytest.raises(CacheError, match=r"NaN or infinite values in 1 row\(s\) \(first \[4\]\); delete the entry"):
        cache.load()
