"""OmegaConf resolvers used by xferlab's Hydra configs (registered on import of the entry points)."""

from __future__ import annotations

import hashlib
import os
import re

from omegaconf import OmegaConf

_UNSAFE = re.compile(r"[^A-Za-z0-9=,._+-]+")
_MAX_DIRNAME = 120


def _unique_id() -> str:
    """Six random hex digits: with the timestamp, makes two sweeps started in one second distinct."""
    return os.urandom(3).hex()


def job_dirname(override_dirname: str) -> str:
    """A safe folder name from Hydra's `key=value,key=value` override string.

    Slashes and other unsafe characters become `_`; over-long names keep a prefix and a digest so
    that two jobs never share a folder.
    """
    name = _UNSAFE.sub("_", override_dirname) or "default"
    if len(name) > _MAX_DIRNAME:
        digest = hashlib.sha256(override_dirname.encode()).hexdigest()[:10]
        name = f"{name[: _MAX_DIRNAME - 11]}_{digest}"
    return name


def console_level(verbose) -> str:
    """The console's logging level: INFO with `verbose=true`, else WARNING (a job's INFO lines then
    go to its train.log only)."""
    if isinstance(verbose, str):
        verbose = verbose.strip().lower() in ("1", "true", "yes", "on")
    return "INFO" if verbose else "WARNING"


def register() -> None:
    # use_cache: Hydra copies the resolver cache from the sweep's master config into every job,
    # so all jobs of one sweep see the same id.
    OmegaConf.register_new_resolver("xferlab.uid", _unique_id, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("xferlab.dirname", job_dirname, replace=True)
    OmegaConf.register_new_resolver("xferlab.console_level", console_level, replace=True)


register()
