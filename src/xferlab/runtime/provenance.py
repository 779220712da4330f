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

# Config keys that never change a result: where files go, how results are mirrored and reported,
# whether to rerun, how closely inputs are checked. Everything else is part of the config digest.
NON_SEMANTIC_KEYS = ("paths", "output_dir", "logger", "hydra", "force", "verbose", "verify", "report")
# Where embeddings are extracted, not what is computed: also out of the digest.
WHERE_IT_RUNS = ("extract.num_workers", "extract.devices")
# Keys added after results existed, with the value that reproduces those results. At that value a
# key stays out of the config digest, and a run's config.yaml without it counts as holding it, so
# runs from before and after the key existed still match (resume, report).
ADDED_KEYS = {"metrics.average_over": "present", "allow_seen_test_targets": False, "unlabelled": False,
              "backbone.preprocess.scale": "resize", "backbone.preprocess.pretrained_pixel_size_um": None,
              "backbone.preprocess.pretrained_input_size": None, "backbone.preprocess.fit": "centre",
              "publish": None}


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
        for key in WHERE_IT_RUNS:  # where it runs, not what it computes
            extract.pop(key.split(".", 1)[1], None)
    return container


def without_added_defaults(config: dict) -> dict:
    """`config` (nested) without the `ADDED_KEYS` that hold their default value (and without
    sections left empty by that)."""
    for dotted, default in ADDED_KEYS.items():
        *parents, leaf = dotted.split(".")
        node = config
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(leaf, default) == default:
            node.pop(leaf, None)
            if not node and parents:
                parent = config
                for key in parents[:-1]:
                    parent = parent[key]
                parent.pop(parents[-1], None)
    return config


def config_digest(cfg: DictConfig) -> str:
    return digest(without_added_defaults(semantic_config(cfg)))


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
