"""Durable publishing: every file and folder of a store or cache entry, and every checkpoint and result
file, reaches the disk (fsync) before it is renamed into place, and the rename itself is fsynced
(the folder holding it). Power cuts cannot be simulated in a test; what is checked is the order of
the fsyncs against the renames, recorded as they happen."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import write_store
from xferlab.embeddings.cache import EmbeddingCache
from xferlab.runtime import io
from xferlab.runtime.checkpointing import AtomicCheckpointIO


@pytest.fixture
def synced(monkeypatch):
    """Record each fsynced path, and whether the final path it is published under existed then."""
    calls: list[Path] = []
    real = io.fsync_path

    def record(path):
        calls.append(Path(path))
        real(path)

    monkeypatch.setattr(io, "fsync_path", record)
    return calls


def published_under_temp_name(calls: list[Path], final: Path) -> set[str]:
    """The paths (relative to `final`) fsynced inside `final`'s temporary folder."""
    out = set()
    for path in calls:
        for parent in [path, *path.parents]:
            if parent.name.startswith(f".{final.name}.tmp-"):
                out.add(path.relative_to(parent).as_posix())
                break
    return out


def every_path(root: Path) -> set[str]:
    paths = {"."}
    for folder, dirs, names in os.walk(root):
        for name in [*dirs, *names]:
            paths.add((Path(folder) / name).relative_to(root).as_posix())
    return paths


def test_a_store_is_fsynced_file_by_file_and_folder_by_folder_before_its_rename(tmp_path, synced):
    store = write_store(tmp_path / "s.zarr", chunk_rows=4)
    assert published_under_temp_name(synced, store.path) == every_path(store.path)  # COMPLETE included
    assert synced[-1] == tmp_path  # then the rename, made durable by fsyncing the parent
    last_in_temp = max(i for i, p in enumerate(synced) if p != tmp_path)
    assert synced.index(tmp_path) > last_in_temp


def test_a_cache_entry_is_fsynced_before_its_rename(tmp_path, synced):
    cache = EmbeddingCache(tmp_path / "cache", {"n_samples": 5})
    with cache.build(5, 3, chunk_rows=2) as writer:
        writer.write(np.arange(5), np.ones((5, 3), dtype=np.float32))
    assert published_under_temp_name(synced, cache.path) == every_path(cache.path)
    assert synced[-1] == cache.root


def test_checkpoints_and_result_files_are_fsynced_and_so_is_their_folder(tmp_path, monkeypatch, synced):
    fsynced_files = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsynced_files.append(os.readlink(f"/proc/self/fd/{fd}")),
                                                 real_fsync(fd))[1])
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(3)}, tmp_path / "ckpt" / "last.ckpt")
    assert any(".last.ckpt.tmp-" in f for f in fsynced_files)  # the data, under its temporary name
    assert synced == [tmp_path / "ckpt"]  # then the rename
    io.atomic_write_text(tmp_path / "run" / "metrics.json", "{}\n")
    assert synced[-1] == tmp_path / "run"


def test_a_failed_build_publishes_nothing_and_fsyncs_nothing(tmp_path, synced):
    with pytest.raises(RuntimeError):
        with io.atomic_directory(tmp_path / "x.zarr") as tmp:
            (tmp / "a").write_text("half")
            raise RuntimeError("stop")
    assert not (tmp_path / "x.zarr").exists() and not list(tmp_path.iterdir()) and synced == []


def test_a_filesystem_that_cannot_fsync_folders_is_named_once_and_files_are_still_flushed(tmp_path, monkeypatch,
                                                                                          caplog):
    import errno

    real_fsync = os.fsync

    def no_folder_fsync(fd):
        if os.path.isdir(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(errno.EINVAL, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", no_folder_fsync)
    with caplog.at_level("WARNING", logger="xferlab.runtime.io"):
        store = write_store(tmp_path / "s.zarr", chunk_rows=4)
        io.atomic_write_text(tmp_path / "metrics.json", "{}\n")
    assert (store.path / "COMPLETE").exists() and (tmp_path / "metrics.json").read_text() == "{}\n"
    said = [r.message for r in caplog.records if "cannot fsync folders" in r.message]
    assert len(said) >= 1 and len(said) == len(set(said))  # once per place
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError, match="I/O error"):  # any other failure is an error: nothing published
        write_store(tmp_path / "t.zarr", chunk_rows=4)
    assert not (tmp_path / "t.zarr").exists() and not list(tmp_path.glob(".t.zarr.tmp-*"))
