"""A job run as two SLURM tasks on one node (the variables `srun --ntasks-per-node=2` sets, given
here by the test; `tests/test_slurm.py` runs it through a real cluster) extracts with both tasks as
Lightning DDP ranks on gloo: the cache entry and the job's metrics equal those of one process, each
task wrote its share, and only task 0 writes the results."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import zarr

from tests.conftest import write_store, xferlab_env

JOB = ["experiment=smoke", "logger=csv", "dataset=store", "extract.batch_size=4"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(root: Path, store: Path, **slurm: str) -> subprocess.Popen:
    env = {k: v for k, v in xferlab_env(**slurm).items() if k in slurm or not k.startswith("SLURM_")}
    return subprocess.Popen([sys.executable, "-m", "xferlab.train", *JOB, f"dataset.path={store}",
                             f"paths.output_root={root / 'out'}", f"hydra.run.dir={root / 'run'}"],
                            cwd=root, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    return out


def entry(root: Path) -> Path:
    (found,) = (root / "out" / "cache").glob("*.zarr")
    return found


def test_two_slurm_tasks_extract_together_what_one_process_extracts(tmp_path):
    store = write_store(tmp_path / "store.zarr", n_per_class=6, classes=("a", "b", "c"), size=32, chunk_rows=4).path
    one = tmp_path / "one"  # 36 images in 9 store chunks: 9 blocks of 4 rows to share out
    one.mkdir()
    finish(start(one, store))

    two = tmp_path / "two"
    two.mkdir()
    step = dict(SLURM_JOB_ID="91", SLURM_JOB_NAME="train", SLURM_NTASKS="2", SLURM_STEP_NUM_TASKS="2",
                SLURM_NTASKS_PER_NODE="2", SLURM_NNODES="1", SLURM_NODEID="0", SLURM_STEP_NODELIST="127.0.0.1",
                MASTER_PORT=str(free_port()))
    tasks = [start(two, store, SLURM_PROCID=str(r), SLURM_LOCALID=str(r), **step) for r in (0, 1)]
    leader, helper = (finish(p) for p in tasks)

    assert entry(two).name == entry(one).name  # the same cache key
    a = zarr.open_array(entry(one) / "embeddings", mode="r")[:]
    b = zarr.open_array(entry(two) / "embeddings", mode="r")[:]
    assert a.shape == b.shape == (36, 192)
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
    spec = lambda e: json.loads((e / "zarr.json").read_text())["attributes"]["spec"]  # noqa: E731
    assert spec(entry(two)) == spec(entry(one))

    assert json.loads((two / "run" / "metrics.json").read_text()) == json.loads((one / "run" / "metrics.json").read_text())
    info = json.loads((two / "run" / "run_info.json").read_text())
    assert info["extract_devices"] == 2 and info["cache_hit"] is False
    log = (two / "run" / "train.log").read_text()
    shares = {int(r): json.loads(chunks) for r, chunks in
              re.findall(r"\[task (\d)\] rank \1 of 2 wrote \d+ cache chunk\(s\): (\[[\d, ]*\])", log)}
    assert set(shares) == {0, 1} and all(shares.values()), log  # each task wrote a share of the chunks
    assert sorted(shares[0] + shares[1]) == list(range(9))
    assert "test/macro_f1=" in leader and "SLURM task 1 helped extract; task 0 writes the results" in helper
    assert "test/macro_f1=" not in helper


def test_a_task_whose_config_gives_other_embeddings_than_task_0s_is_stopped(tmp_path, monkeypatch):
    """The tasks of one job must compute one cache entry: a task told of another entry than its own
    stops naming both keys, before it extracts anything."""
    import pytest

    from tests.embeddings.test_extractor import make_trainer, tiny_backbone
    from xferlab.backbones.channels import NaturalMapping
    from xferlab.backbones.preprocess import Preprocessor
    from xferlab.embeddings.extractor import extract_embeddings
    from xferlab.runtime import slurm_tasks

    store = write_store(tmp_path / "store.zarr", size=16)
    backbone = tiny_backbone()
    adapter = NaturalMapping("natural", store.channel_names, backbone.in_channels)
    monkeypatch.setattr(slurm_tasks, "receive", lambda tasks: ("0123abcd", None))
    helper = slurm_tasks.JobTasks(rank=1, world=2, per_node=2, nodes=1, address="127.0.0.1", port=1)
    with pytest.raises(slurm_tasks.TasksError, match=r"task 1 of 2: task 0 computes embeddings 0123abcd, this "
                                                      r"task's config gives \w+; the tasks of one job must run"):
        extract_embeddings(store, backbone, adapter, Preprocessor(16, "zscore"), tmp_path / "cache", make_trainer,
                           tasks=helper)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())
