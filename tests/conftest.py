"""Shared fixtures: offline environment, composed configs, a tiny image store."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402

import xferlab  # noqa: E402
import xferlab.runtime.resolvers  # noqa: E402,F401
from xferlab.data.store import ImageStore, StoreWriter  # noqa: E402

CONF_DIR = Path(xferlab.__file__).parent / "conf"
SMOKE = ["experiment=smoke", "logger=csv"]


def compose_config(overrides: list[str], config_name: str = "train"):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


@pytest.fixture(scope="session")
def shared_root(tmp_path_factory) -> Path:
    """An outputs root shared by the session: stores and caches built once."""
    return tmp_path_factory.mktemp("xferlab-root")


@pytest.fixture
def job_config(shared_root, tmp_path):
    """Compose the smoke config with outputs under the shared root and the run dir in tmp_path."""

    def make(*overrides: str, root: Path | None = None):
        root = root or shared_root
        return compose_config(
            SMOKE + [f"paths.output_root={root}", f"paths.output_dir={tmp_path / 'run'}", *overrides]
        )

    return make


def write_store(path: Path, n_per_class: int = 4, classes=("a", "b"), channels=("nucleus", "protein"),
                size: int = 8, seed: int = 0, dtype="uint16", chunk_rows: int = 256) -> ImageStore:
    """A small random store: `n_per_class` targets per class, two crops per target."""
    rng = np.random.default_rng(seed)
    rows, images = [], []
    for k, cls in enumerate(classes):
        for t in range(n_per_class):
            for c in range(2):
                rows.append({"sample_id": f"{cls}{t}_{c}", "target": f"{cls}{t}", "label": k})
                images.append(rng.integers(0, 1000, size=(len(channels), size, size)))
    array = np.stack(images).astype(dtype)
    with StoreWriter(path, n_samples=len(array), channel_names=channels, image_size=(size, size),
                     dtype=dtype, classes=classes, attrs={"source": "test"}, chunk_rows=chunk_rows) as writer:
        writer.append(array[: len(array) // 2])
        writer.append(array[len(array) // 2 :])
        writer.write_samples(pd.DataFrame(rows))
    return ImageStore(path)


SRC_DIR = Path(xferlab.__file__).resolve().parents[1]


def xferlab_env(**extra: str) -> dict[str, str]:
    """The environment for a `python -m xferlab.<name>` subprocess running this very xferlab."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true", **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC_DIR), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def kill_when_stalled(module: str, args: list[str], cwd: Path, stall_at: str, where: str = "",
                      timeout: float = 300) -> str:
    """Run `python -m <module> <args>` until it reaches the stall point `stall_at` (see
    `xferlab.runtime.faults`), then SIGKILL it; returns its output. Fails if it exits before stalling."""
    import signal
    import subprocess
    import sys
    import time

    marker = cwd / f"stalled-{stall_at.replace('@', '-')}"
    log = cwd / f"killed-{module.rsplit('.', 1)[-1]}.log"
    env = xferlab_env(XFERLAB_STALL_AT=stall_at, XFERLAB_STALL_WHERE=where, XFERLAB_STALL_FILE=str(marker))
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        try:
            while not marker.exists():
                if proc.poll() is not None:
                    raise AssertionError(f"exited ({proc.returncode}) before {stall_at}:\n{log.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"never reached {stall_at}:\n{log.read_text()[-3000:]}")
                time.sleep(0.05)
            assert int(marker.read_text()) == proc.pid
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return log.read_text()
