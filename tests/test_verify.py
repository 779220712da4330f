"""`python -m xferlab.verify`: every store, cache entry and checkpoint under a folder, checked in full."""

from __future__ import annotations

import numpy as np
import torch

from tests.conftest import write_store
from xferlab.embeddings.cache import EmbeddingCache
from xferlab.verify import main


def outputs(tmp_path):
    root = tmp_path / "outputs"
    store = write_store(root / "data" / "s.zarr", chunk_rows=4)
    cache = EmbeddingCache(root / "cache", {"n_samples": 4})
    with cache.build(4, 3, chunk_rows=2) as writer:
        writer.write(np.arange(4), np.ones((4, 3), dtype=np.float32))
    (root / "pretrain" / "x").mkdir(parents=True)
    torch.save({"teacher": {"w": torch.ones(100)}}, root / "pretrain" / "x" / "checkpoint.pth")
    return root, store.path, cache.path


def test_an_intact_outputs_folder_passes(tmp_path, capsys):
    root, store, entry = outputs(tmp_path)
    assert main([str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(line.startswith("OK") for line in lines)
    assert {line.split()[1].rstrip(":") for line in lines} == {str(store), str(entry),
                                                                 str(root / "pretrain" / "x" / "checkpoint.pth")}


def test_damage_is_reported_and_fails_the_check(tmp_path, capsys):
    root, store, entry = outputs(tmp_path)
    chunk = next(p for p in sorted((entry / "embeddings" / "c").rglob("*")) if p.is_file())
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0xFF
    chunk.write_bytes(bytes(data))
    (store / "MANIFEST.json").unlink()  # an older store: reported, not a failure
    ckpt = root / "pretrain" / "x" / "checkpoint.pth"
    ckpt.write_bytes(ckpt.read_bytes()[:-50])
    assert main([str(root)]) == 1
    out = capsys.readouterr().out
    assert f"DAMAGED     {entry}: embeddings/c/" in out and "content changed" in out
    assert f"UNCHECKED   {store}: no MANIFEST.json" in out
    assert f"DAMAGED     {ckpt}: does not load" in out
    assert main(["--quick", str(entry)]) == 0  # same size: only the full check sees it
    assert main([str(tmp_path / "nothing")]) == 1


def test_entries_that_depend_on_a_damaged_store_chunk_are_named(tmp_path, capsys):
    root = tmp_path / "outputs"
    store = write_store(root / "data" / "s.zarr", chunk_rows=4, dtype="uint8")
    other = write_store(root / "data" / "t.zarr", chunk_rows=4, dtype="uint8", seed=1)
    entries = {}
    for name, source in (("from_s", store), ("from_t", other)):
        cache = EmbeddingCache(root / "cache", {"n_samples": len(source), "name": name})
        with cache.build(len(source), 3, chunk_rows=4, source=source.source_record()) as writer:
            writer.write(np.arange(len(source)), np.ones((len(source), 3), dtype=np.float32))
        entries[name] = cache.path
    chunk = store.path / "images" / "c" / "1" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[40] ^= 0x10  # same size: found by the full check
    chunk.write_bytes(bytes(data))
    assert main([str(root)]) == 1
    out = capsys.readouterr().out
    assert f"DAMAGED     {store.path}: images/c/1/0/0/0: content changed" in out
    assert (f"DEPENDS     {entries['from_s']}: computed from images/c/1/0/0/0 (rows 4-7) of {store.path.resolve()}, "
            "damaged now") in out
    assert str(entries["from_t"]) + ": computed" not in out  # computed from the other, intact store
    assert "STALE" not in out  # the entry was computed before the damage, from the bytes the manifest records
