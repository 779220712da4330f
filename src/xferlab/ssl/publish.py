"""A finished pretraining's checkpoint, published under the name a backbone config loads.

`publish=<file name>` (set by `experiment=opencell_dino`: `opencell_dino.pth`, what `backbone=opencell`
loads) copies `<output_dir>/checkpoint.pth` into the weights folder (`$XFERLAB_WEIGHTS`, see
`backbones.locations`) once the last epoch is written, and pins its sha256 in the folder's
`weights.lock`. The copy is atomic (a temporary name, then a rename), so an interrupted or running
pretraining never leaves a half-trained or half-written file where evaluation looks.

A file already there is replaced only when it is this very pretraining's (the same config digest
in its record, e.g. a rerun that resumed); anything else (another pretraining's, your own
checkpoint) stops the run before any training, naming the file.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from xferlab.backbones.locations import LOCK_FILE, record_lock, weights_dir

log = logging.getLogger(__name__)

SUFFIXES = (".pth", ".pt")


def published_path(name: str) -> Path:
    """Where `publish=<name>` puts the checkpoint: a bare `.pth` file name in the weights folder."""
    if not name or Path(name).name != name or Path(name).suffix not in SUFFIXES:
        raise ValueError(f"publish={name!r}: expected a file name ending in {' or '.join(SUFFIXES)} (no folder), the "
                         "name a backbone config's `weights` loads from the weights folder, e.g. opencell_dino.pth")
    return weights_dir() / name


def publish_problem(name: str | None, config_digest: str) -> str | None:
    """Why publishing under `name` would replace a file that is not this pretraining's (None: it
    would not). Read from the file's record, without loading its weights."""
    if not name:
        return None
    try:
        path = published_path(name)
    except ValueError as err:
        return str(err)
    if not path.exists():
        return None
    from xferlab.backbones.checkpoints import pretraining_record
    from xferlab.backbones.weights import WeightsError

    try:
        found = pretraining_record(path).get("config_digest")
    except WeightsError:
        found = None
    if found == config_digest:
        return None
    whose = f"another pretraining's (config digest {found})" if found else "not written by this pretraining"
    return (f"publish={name}: {path} already exists and is {whose}; this pretraining would replace it when it "
            f"finishes. Move it away (and its line in {LOCK_FILE}) to replace it, or set publish=<another name>.pth "
            "(and evaluate with backbone.weights=<that name>)")


def publish(checkpoint: Path, name: str, config_digest: str) -> Path:
    """Copy the finished `checkpoint` to the weights folder as `name` (atomically) and pin it in
    `weights.lock`; returns the published path."""
    from xferlab.runtime.integrity import file_sha256
    from xferlab.runtime.io import replace_durably, temp_sibling

    problem = publish_problem(name, config_digest)
    if problem:
        raise FileExistsError(problem)
    path = published_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        with open(checkpoint, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        replace_durably(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    digest = file_sha256(path)
    record_lock(path.parent, path.name, digest)
    log.info("published %s as %s (sha256 %s)", checkpoint, path, digest)
    return path
