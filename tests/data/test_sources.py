"""Built stores: a builder killed midway leaves a temporary folder that the next builder removes;
damaged stores are refused with a message saying how to get a good one."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.conftest import write_store, xferlab_env
from xferlab.data.sources import StoreSource, build_once
from xferlab.data.store import StoreDamagedError


def test_a_builder_killed_midway_leaves_a_temp_folder_that_the_next_build_removes(tmp_path, caplog):
    path = tmp_path / "data" / "toy.zarr"
    script = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        from xferlab.data.store import StoreWriter
        with StoreWriter({str(path)!r}, n_samples=8, channel_names=["a"], image_size=(4, 4), dtype="uint16",
                         classes=["x"], chunk_rows=2) as writer:
            writer.append(np.zeros((4, 1, 4, 4), dtype="uint16"))
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=xferlab_env(), capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    (stale,) = path.parent.glob(".toy.zarr.tmp-*")
    assert not path.exists()
    with caplog.at_level("WARNING", logger="xferlab.data.sources"):
        store = build_once(path, lambda p: write_store(p))
    assert len(store) == 16 and not stale.exists()
    assert f"removed {stale}" in caplog.text


def test_a_damaged_store_is_refused_with_how_to_rebuild_it(tmp_path):
    path = tmp_path / "toy.zarr"
    build_once(path, lambda p: write_store(p, chunk_rows=4))
    chunk = sorted(p for p in (path / "images" / "c").rglob("*") if p.is_file())[0]
    chunk.unlink()
    with pytest.raises(StoreDamagedError, match=f"delete {path} and run again to rebuild it"):
        build_once(path, lambda p: write_store(p))
    with pytest.raises(StoreDamagedError, match="given as dataset.path, so xferlab cannot rebuild it"):
        StoreSource("mine", str(path)).open(tmp_path)
