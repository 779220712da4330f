"""Experiment loggers: a CSV log that is always written, and a W&B run that mirrors it.

W&B runs offline unless `logger.mode=online`. Online without credentials or without a reachable
server, the run goes on offline with one warning (sync it later with `wandb sync`); it never
blocks on a prompt and never fails the job.
"""

from __future__ import annotations

import logging
import netrc
import os
import shutil
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

log = logging.getLogger(__name__)

# Lightning's start-up chatter (devices, tips) and warnings that do not apply to in-memory data.
for _name in ("lightning.pytorch", "lightning.fabric", "lightning"):
    logging.getLogger(_name).setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*infer the batch indices.*")
warnings.filterwarnings("ignore", message=".*LeafSpec.*")

MODES = ("offline", "online", "disabled")
INIT_TIMEOUT_S = 30


# Top-level W&B config keys without dots, set by every training job: the dashboard
# (`python -m xferlab.dashboard`) groups runs by them. The flat config's `backbone.name` holds the same
# value, but a dotted key is read by W&B's report filters as a nested one.
BACKBONE_KEY = "backbone_name"


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`; lists are kept as values."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        out.update(flatten(value, name) if isinstance(value, dict) else {name: value})
    return out


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host or "api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def start_wandb_run(*, mode: str, project: str, entity: str | None, group: str, name: str,
                    job_type: str, tags: list[str], config: dict[str, Any], save_dir: Path):
    import wandb

    if mode not in MODES:
        raise ValueError(f"logger.mode={mode!r}; choose one of {MODES}")
    if mode == "online" and not has_wandb_credentials():
        warnings.warn("logger.mode=online but no W&B credentials (WANDB_API_KEY or `wandb login`): "
                      "logging offline instead; sync later with `wandb sync`", stacklevel=2)
        mode = "offline"
    kwargs = dict(project=project, entity=entity, group=group, name=name, job_type=job_type,
                  tags=tags, config=config, dir=str(save_dir), reinit="finish_previous",
                  settings=wandb.Settings(init_timeout=INIT_TIMEOUT_S, silent=True, console="off"))
    save_dir.mkdir(parents=True, exist_ok=True)
    try:
        return wandb.init(mode=mode, **kwargs)
    except Exception as err:  # noqa: BLE001 - an unreachable server must not cost the results
        if mode != "online":
            raise
        warnings.warn(f"W&B online init failed ({err}); logging offline instead; sync later with "
                      "`wandb sync`", stacklevel=2)
        return wandb.init(mode="offline", **kwargs)


def build_loggers(logger_cfg, *, run_dir: Path, group: str, name: str, job_type: str,
                  tags: list[str], config: dict[str, Any], csv_version: str = "") -> tuple[list[Logger], Any]:
    """The job's Lightning loggers and its W&B run (None when W&B is disabled). The run's tags are
    `tags` followed by the configured `logger.tags`."""
    csv_dir = Path(run_dir) / "csv" / csv_version
    if csv_dir.is_dir() and any(csv_dir.iterdir()):
        # a rerun in the same run folder (force=true, a resumed sweep): the earlier attempt's CSV log is
        # replaced, as Lightning would do with a warning that reads like data loss; say it plainly instead
        log.info("replacing the CSV log of an earlier attempt in %s", csv_dir)
        shutil.rmtree(csv_dir)
    loggers: list[Logger] = [CSVLogger(save_dir=str(run_dir), name="csv", version=csv_version)]
    run = None
    if logger_cfg.mode != "disabled":
        run = start_wandb_run(mode=logger_cfg.mode, project=logger_cfg.project, entity=logger_cfg.entity,
                              group=group, name=name, job_type=job_type,
                              tags=[*tags, *(str(t) for t in logger_cfg.get("tags") or [])],
                              config=flatten(config), save_dir=run_dir)
        loggers.append(WandbLogger(experiment=run))
    return loggers, run


def log_final(loggers: list[Logger], metrics: dict[str, float]) -> None:
    """One last row of metrics (the test scores) in every logger, written out at once."""
    for logger in loggers:
        logger.log_metrics(metrics)
        logger.save()
