"""What is saved beside every number: config digest, git revision and package version."""

from __future__ import annotations

import hashlib
import json
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xferlab import __version__

# Config keys that never change a result: where files go, how results are mirrored, whether to
# rerun, how closely inputs are checked. Everything else is part of the config digest.
NON_SEMANTIC_KEYS = ("paths", "output_dir", "logger", "hydra", "force", "verify")


def digest(obj: Any, length: int = 16) -> str:
    """A short sha256 of a JSON-serialisable object (keys sorted, so order does not matter)."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def semantic_config(cfg: DictConfig) -> dict:
    """The resolved config without the keys that cannot change a number."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    for key in NON_SEMANTIC_KEYS:
        container.pop(key, None)
    extract = container.get("extract")
    if isinstance(extract, dict):
        for key in ("num_workers", "devices"):  # where it runs, not what it computes
            extract.pop(key, None)
    return container


def config_digest(cfg: DictConfig) -> str:
    return digest(semantic_config(cfg))


@lru_cache(maxsize=1)
def git_revision() -> str:
    """The commit of the xferlab source tree (with `-dirty` for local changes), or a note saying
    that xferlab runs from an installed package with no git history."""
    src = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=10
        )
        if rev.returncode != 0:
            raise RuntimeError(rev.stderr)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=src, capture_output=True, text=True, timeout=10,
        )
        suffix = "-dirty" if dirty.stdout.strip() else ""
        return rev.stdout.strip() + suffix
    except (OSError, RuntimeError, subprocess.TimeoutExpired):
        return f"unknown (installed xferlab {__version__}, no git checkout)"
