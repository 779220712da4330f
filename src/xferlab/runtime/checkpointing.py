"""Lightning checkpoints that are complete or absent, and choosing one to resume from.

Lightning's own `TorchCheckpointIO` serialises into memory, then copies a temporary file from the
system temp folder over the target: a kill during that copy leaves a truncated `last.ckpt`.
`AtomicCheckpointIO` writes next to the target under a temporary name, fsyncs it, renames it and
fsyncs the folder (so a power cut leaves the old file or the new one, too).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from xferlab.runtime import faults
from xferlab.runtime.integrity import CheckpointError, checkpoint_problems, describe
from xferlab.runtime.io import replace_durably, temp_sibling

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """`save_checkpoint` writes `.<name>.tmp-<id>` beside the target, fsyncs it, then renames it
    over the target: a reader (or a resumed run) sees the old file or the new one, never half of one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(path)
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            faults.stall_point("checkpoint.before_replace", str(path))
            replace_durably(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


class StallPoint(Callback):
    """Calls `xferlab.runtime.faults.stall_point(<name>.epoch_end)` after each training epoch (crash tests)."""

    def __init__(self, name: str, where: str = ""):
        self.name, self.where = name, where

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        faults.stall_point(f"{self.name}.epoch_end", self.where)


def resume_from(requested: bool | str | None, last: Path) -> str | None:
    """The checkpoint a run resumes from.

    - a path (`resume=/path/to/x.ckpt`): that file, which must be intact; a missing or damaged file
      is a `CheckpointError` (the run never silently starts from scratch instead);
    - `true`: `last` if it exists and is intact. A damaged `last` (e.g. truncated by a crash of an
      older xferlab, or by a failing disk) is reported, renamed to `<name>.corrupt` and the run
      starts from scratch (there is no earlier checkpoint to fall back to; a run is deterministic,
      so starting over gives the same result);
    - `false` / None: start from scratch.
    """
    if requested is None or requested is False:
        return None
    if requested is not True:
        path = Path(str(requested)).expanduser()
        problems = checkpoint_problems(path)
        if problems:
            raise CheckpointError(f"resume={requested}: cannot resume from {path}: {describe(problems)}. "
                                  "Give an intact checkpoint, or resume=true to use the run's last.ckpt.")
        log.info("resuming from %s", path)
        return str(path)
    if not last.exists():
        return None
    problems = checkpoint_problems(last)
    if problems:
        aside = last.with_name(last.name + ".corrupt")
        os.replace(last, aside)
        log.warning("%s is damaged (%s): moved it to %s and starting from scratch", last, describe(problems), aside)
        return None
    log.info("resuming from %s", last)
    return str(last)
