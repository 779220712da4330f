import numpy as np
import pytest

from xferlab.embeddings.cache import CacheError, EmbeddingCache


SPEC = {"backbone": {"weights_sha256": "abc"}, "channels": {"strategy": "natural"},
        "preprocess": {"input_size": 64}, "precision": "32-true", "images_fingerprint": "f", "n_samples": 5}


def test_key_changes_with_every_input():
    base = EmbeddingCache("/tmp", SPEC).key
    for part, value in [("backbone", {"weights_sha256": "abd"}), ("channels", {"strategy": "replicate"}),
                        ("preprocess", {"input_size": 32}), ("precision", "bf16-mixed"),
                        ("images_fingerprint", "g")]:
        assert EmbeddingCache("/tmp", {**SPEC, part: value}).key != base, part
    assert EmbeddingCache("/tmp", dict(reversed(list(SPEC.items())))).key == base


def test_build_publishes_a_complete_entry(tmp_path):
    cache = EmbeddingCache(tmp_path, SPEC)
    values = np.arange(15, dtype=np.float32).reshape(5, 3)
    with cache.build(5, 3, chunk_rows=2) as writer:
        writer.write(np.arange(0, 2), values[:2])
        writer.write(np.arange(2, 5), values[2:])
    assert cache.is_complete()
    np.testing.assert_array_equal(cache.load(), values)


def test_interrupted_build_leaves_nothing(tmp_path):
    cache = EmbeddingCache(tmp_path, SPEC)
    with pytest.raises(RuntimeError, match="boom"):
        with cache.build(5, 3, chunk_rows=2) as writer:
            writer.write(np.arange(0, 2), np.zeros((2, 3)))
            raise RuntimeError("boom")
    assert not cache.is_complete()
    assert [p for p in tmp_path.iterdir()] == []


def test_missing_or_out_of_order_rows_are_errors(tmp_path):
    cache = EmbeddingCache(tmp_path, SPEC)
    with pytest.raises(CacheError, match="incomplete"):
        with cache.build(5, 3, chunk_rows=2) as writer:
            writer.write(np.arange(0, 4), np.zeros((4, 3)))
    with pytest.raises(CacheError, match="out of order"):
        with cache.build(5, 3, chunk_rows=2) as writer:
            writer.write(np.arange(1, 3), np.zeros((2, 3)))
    assert not cache.is_complete()
