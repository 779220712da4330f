"""Checkpoints are written atomically, and a run resumes only from an intact one."""

from __future__ import annotations

import threading

import pytest
import torch

from xferlab.runtime.checkpointing import AtomicCheckpointIO, resume_from
from xferlab.runtime.integrity import CheckpointError


def test_a_failed_save_leaves_the_previous_checkpoint_and_no_temporary_file(tmp_path):
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)
    with pytest.raises(Exception):
        io.save_checkpoint({"epoch": 2, "lock": threading.Lock()}, path)  # cannot be pickled, halfway through
    assert io.load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_resume_true_takes_an_intact_last_checkpoint_or_none(tmp_path):
    last = tmp_path / "last.ckpt"
    assert resume_from(True, last) is None  # nothing to resume from: a fresh start
    AtomicCheckpointIO().save_checkpoint({"epoch": 1}, last)
    assert resume_from(True, last) == str(last)
    assert resume_from(False, last) is None and resume_from(None, last) is None


def test_a_damaged_last_checkpoint_is_reported_moved_aside_and_the_run_starts_over(tmp_path, caplog):
    last = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"epoch": 1, "w": torch.ones(1000)}, last)
    last.write_bytes(last.read_bytes()[:-100])  # truncated, as a non-atomic write killed midway leaves it
    with caplog.at_level("WARNING", logger="xferlab.runtime.checkpointing"):
        assert resume_from(True, last) is None
    assert f"{last} is damaged" in caplog.text and "starting from scratch" in caplog.text
    assert not last.exists() and (tmp_path / "last.ckpt.corrupt").exists()


def test_a_checkpoint_named_by_the_user_must_be_intact(tmp_path):
    given = tmp_path / "epoch3.ckpt"
    with pytest.raises(CheckpointError, match=f"cannot resume from {given}: missing"):
        resume_from(str(given), tmp_path / "last.ckpt")
    AtomicCheckpointIO().save_checkpoint({"epoch": 3, "w": torch.ones(1000)}, given)
    assert resume_from(str(given), tmp_path / "last.ckpt") == str(given)
    data = bytearray(given.read_bytes())
    data[len(data) // 2] ^= 0xFF
    given.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="fails its CRC check.*Give an intact checkpoint"):
        resume_from(str(given), tmp_path / "last.ckpt")
    assert given.exists()  # never moved: the user's file
