"""Manifests of published folders and checks of checkpoint files: damage is found, intact files pass."""

from __future__ import annotations

import pytest
import torch

from xferlab.runtime.integrity import (MANIFEST, checkpoint_problems, manifest_problems, verification, default_level,
                               write_manifest)


def flip_byte(path, offset=None):
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "entry.zarr"
    (root / "a" / "c").mkdir(parents=True)
    (root / "zarr.json").write_text("{}")
    (root / "a" / "c" / "0").write_bytes(bytes(range(256)) * 4)
    (root / "a" / "c" / "1").write_bytes(b"x" * 100)
    write_manifest(root)
    (root / "COMPLETE").write_text("done\n")  # written after the manifest, not listed
    return root


def test_an_intact_folder_passes_at_both_levels(folder):
    assert manifest_problems(folder, "quick") == [] and manifest_problems(folder, "full") == []


def test_deleted_or_truncated_files_are_found_by_the_quick_check(folder):
    (folder / "a" / "c" / "1").unlink()
    truncate(folder / "a" / "c" / "0")
    assert manifest_problems(folder, "quick") == ["a/c/0: 512 bytes, 1024 recorded", "a/c/1: missing"]


def test_flipped_bytes_need_the_full_check(folder):
    flip_byte(folder / "a" / "c" / "0")
    assert manifest_problems(folder, "quick") == []  # same size
    assert manifest_problems(folder, "full") == ["a/c/0: content changed (sha256 differs from the one recorded)"]
    (folder / "a" / "c" / "2").write_bytes(b"new")
    assert "a/c/2: not in MANIFEST.json" in manifest_problems(folder, "full")


def test_a_folder_without_a_manifest_is_unchecked_and_an_unreadable_manifest_is_damage(folder):
    (folder / MANIFEST).write_text("{not json")
    assert manifest_problems(folder)[0].startswith("MANIFEST.json unreadable")
    (folder / MANIFEST).unlink()
    assert manifest_problems(folder, "full") is None


def test_verification_level_is_scoped_and_checked():
    assert default_level() == "quick"
    with verification("full"):
        assert default_level() == "full"
    assert default_level() == "quick"
    with pytest.raises(ValueError, match="verify='fast'"):
        with verification("fast"):
            pass


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "garbage"])
def test_damaged_checkpoints_are_found(tmp_path, damage):
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.arange(2000, dtype=torch.float32)}, "epoch": 1}, path)
    assert checkpoint_problems(path) == []
    if damage == "flip":  # in the tensor data: torch.load alone would not notice
        flip_byte(path)
        assert torch.load(path, weights_only=True)["epoch"] == 1
        assert "fails its CRC check" in checkpoint_problems(path)[0]
    elif damage == "truncate":
        truncate(path)
        assert checkpoint_problems(path) == ["not a zip archive: truncated, or not a checkpoint"]
    elif damage == "empty":
        path.write_bytes(b"")
        assert checkpoint_problems(path) == ["empty file"]
    else:
        path = path.with_suffix(".pth")
        path.write_bytes(b"<html>not found</html>")
        assert checkpoint_problems(path)[0].startswith("does not load")
    assert checkpoint_problems(tmp_path / "nope.ckpt") == ["missing"]
