"""What several benchmarks share: synthetic image stores of a given size, configs composed as the
CLI would, and the extraction Trainer a job uses."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import xferlab
import xferlab.runtime.resolvers  # noqa: F401  (registers the config resolvers)
from xferlab.data.store import ImageStore, StoreWriter

CONF_DIR = Path(xferlab.__file__).parent / "conf"


def versions() -> dict[str, str]:
    """The versions of what the benchmarks' numbers depend on."""
    import lightning
    import numcodecs
    import PIL
    import timm
    import torch
    import torchvision
    import zarr

    return {"xferlab": xferlab.__version__, "torch": torch.__version__, "cuda_runtime": str(torch.version.cuda),
            "torchvision": torchvision.__version__, "lightning": lightning.__version__, "timm": timm.__version__,
            "zarr": zarr.__version__, "numcodecs": numcodecs.__version__, "pillow": PIL.__version__,
            "numpy": np.__version__}


def compose_config(overrides: list[str], config_name: str = "train"):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def synthetic_store(path: Path, n: int, size: int, channels=("nucleus", "protein"), seed: int = 0,
                    block: int = 256, chunk_rows: int | None = None) -> ImageStore:
    """`n` uint16 images of `size` px: a few smooth random patterns plus per-image noise, written
    block by block (so building a store larger than memory takes little memory), in chunks of
    `chunk_rows` (None: the store's default)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    patterns = np.stack([
        np.stack([1000 + 800 * np.sin(6.28 * (f * xx + g * yy)) for f, g in rng.uniform(0.5, 4, (len(channels), 2))])
        for _ in range(8)
    ])
    with StoreWriter(path, n_samples=n, channel_names=channels, image_size=(size, size), dtype="uint16",
                     classes=["a", "b"], attrs={"source": "bench"}, chunk_rows=chunk_rows) as writer:
        for start in range(0, n, block):
            m = min(block, n - start)
            noise = rng.integers(0, 64, size=(m, len(channels), size, size))
            writer.append((patterns[np.arange(start, start + m) % len(patterns)] + noise).astype(np.uint16))
        writer.write_samples(pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)],
                                           "target": [f"t{i // 4}" for i in range(n)],
                                           "label": [(i // 4) % 2 for i in range(n)]}))
    return ImageStore(path)


def extract_trainer(accelerator: str = "cpu", **kwargs) -> L.Trainer:
    """The Trainer a job extracts with (see job.run_job)."""
    kwargs.setdefault("devices", 1)
    return L.Trainer(accelerator=accelerator, deterministic=True, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, enable_checkpointing=False, **kwargs)


def publish(rows: list[dict], table, record: Path | None = None, table_path: Path | None = None, **header) -> str:
    """A study's rows: saved as a JSON record (`time`, `git_revision`, `header`, `results`) when
    `record` is given, rendered by `table(rows)` into `table_path` when given, and printed."""
    from datetime import datetime

    from xferlab.runtime.io import atomic_write_json
    from xferlab.runtime.provenance import git_revision

    if record is not None:
        atomic_write_json(record, {"time": datetime.now().isoformat(timespec="seconds"),
                                   "git_revision": git_revision(), **header, "results": rows})
    text = table(rows)
    if table_path is not None:
        table_path.write_text(text)
    print(text, end="")
    return text

