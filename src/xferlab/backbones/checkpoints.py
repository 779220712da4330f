"""Reading checkpoint files safely and finding the backbone's weights inside them.

Formats recognised by content, never by the file's name: a file that starts with a safetensors
header is read by `safetensors`; anything else by `torch.load` (a zip archive, or torch's legacy
pickle). A `.safetensors` name says nothing: OpenPhenom's released `model.safetensors` is what its
publisher's `MAEModel.save_pretrained` writes, `torch.save({"state_dict": ...})` (a torch zip).
Layouts recognised:
- a plain state dict, e.g. DINO's backbone-only files or timm's (safetensors or torch);
- a DINO training checkpoint: a dict with `teacher` / `student` state dicts (keys prefixed
  `backbone.` / `head.`, the student's also `module.`), `optimizer`, `epoch`, `args`
  (an `argparse.Namespace`), `dino_loss`; DINO4Cells and xferlab's own pretraining write the same;
- a wrapper dict holding one of these under `state_dict` or `model`.
Projection / classifier head keys (`head.`) are dropped; every other key must fit the model.

A file listed in its folder's `weights.lock` must still have the sha256 recorded there.

Files are read with `torch.load(weights_only=True)`, allowing only `argparse.Namespace` beyond
tensors and plain containers. A file that needs other pickled objects could run arbitrary code when
loaded; it is refused unless `backbone.trust_checkpoint=true`.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from xferlab.backbones.locations import check_lock
from xferlab.backbones.resolve import resolve_weights
from xferlab.backbones.weights import WeightsError, file_sha256
from xferlab.runtime.integrity import checkpoint_problems

log = logging.getLogger(__name__)

SAFE_GLOBALS = [argparse.Namespace]
CHECKPOINT_KEYS = ("teacher", "student")
STRIP_PREFIXES = ("module.", "backbone.", "_orig_mod.")
HEAD_PREFIXES = ("head.",)
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's (zip) format
PICKLE_PROTO = b"\x80"  # torch's legacy format: a pickle, protocol 2 or later


class UnsafeCheckpointError(WeightsError):
    """The checkpoint needs arbitrary pickled objects to load."""


@dataclass
class BackboneState:
    state: dict[str, torch.Tensor]
    format: str
    file_sha256: str
    dropped: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def is_safetensors(path: Path) -> bool:
    """A safetensors file starts with its JSON header's length (8 bytes, little-endian), then `{`."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:] == b"{" and 0 < int.from_bytes(head[:8], "little") < path.stat().st_size


def read_file(path: str | Path, trust: bool = False) -> Any:
    """The object stored in a checkpoint file (tensors, containers, Namespace only unless trusted)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; set backbone.weights to a checkpoint file")
    if path.stat().st_size == 0:
        raise WeightsError(f"weights file {path} is empty: download it again")
    if is_safetensors(path):  # by content: a name says nothing (OpenPhenom's model.safetensors is a torch zip)
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # noqa: BLE001
            raise WeightsError(f"{path} is not a readable safetensors file ({err}): download it again") from err
    return read_torch_file(path, trust)


def unreadable(path: Path, err: Exception) -> WeightsError:
    """The error for a file neither reader can read, naming what its name promised."""
    what = ("not a readable safetensors file (it has no safetensors header) nor a PyTorch checkpoint"
            if path.suffix == ".safetensors" else "not a PyTorch checkpoint")
    return WeightsError(f"{path} is {what}, or it is truncated ({err}): download it again")


def read_torch_file(path: Path, trust: bool) -> Any:
    """A file `torch.load` reads (zip archive or legacy pickle), with the safety rules above. Given
    an open file, not the path: torch.load sends a path ending in `.safetensors` to the safetensors
    reader by its name (torch 2.14)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith((ZIP_MAGIC, PICKLE_PROTO)):  # e.g. an HTML error page saved as the download
        raise unreadable(path, ValueError(f"it starts with {head!r}, neither a zip archive nor a pickle"))
    if zipfile.is_zipfile(path):  # torch.load does not check the members' CRCs: a flipped byte loads silently
        damaged = checkpoint_problems(path, load=False)
        if damaged:
            raise WeightsError(f"weights file {path} is damaged ({damaged[0]}): download it again")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS), open(path, "rb") as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights_only" not in str(err) and "Unsupported global" not in str(err):
            raise unreadable(path, err) from err
        if not trust:
            raise UnsafeCheckpointError(
                f"{path} contains pickled Python objects beyond tensors and argparse.Namespace "
                f"({str(err).splitlines()[0]}). Loading it could run arbitrary code. If you trust "
                "where this file came from, set backbone.trust_checkpoint=true; otherwise re-save "
                "its state dict alone."
            ) from err
        log.warning("loading %s with full unpickling (backbone.trust_checkpoint=true)", path)
        with open(path, "rb") as f:
            return torch.load(f, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any other failure: damaged or not a checkpoint
        raise unreadable(path, err) from err


def pretraining_record(path: str | Path, trust: bool = False) -> dict[str, Any]:
    """What xferlab's pretraining recorded in a checkpoint (`xferlab`: the targets it saw, the pixel
    and input size it was pretrained at, ...), or {} for a checkpoint from elsewhere. The tensors
    are memory-mapped, not read, so this takes a fraction of a second even for large files; a
    file saved in torch's legacy format (which cannot be mapped), or a torch file named
    `.safetensors` (OpenPhenom's: mapping needs the path, which torch.load would take for
    safetensors by its name), is read whole by `read_file`."""
    path = Path(path)
    if is_safetensors(path):  # by content, as read_file
        return {}
    obj = None
    if path.suffix != ".safetensors":  # torch.load would take such a path for a safetensors file by its name
        try:
            with torch.serialization.safe_globals(SAFE_GLOBALS):
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001 - not mappable, unsafe or damaged: read_file says which, or reads it
            obj = None
    if obj is None:
        obj = read_file(path, trust=trust)
    record = obj.get("xferlab") if isinstance(obj, dict) else None
    return dict(record) if isinstance(record, dict) else {}


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in STRIP_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def backbone_state(obj: Any, checkpoint_key: str = "teacher") -> tuple[dict[str, torch.Tensor], str, list[str], dict]:
    """The backbone's state dict inside a checkpoint object, its format name, dropped keys, metadata."""
    meta: dict[str, Any] = {}
    fmt = "state_dict"
    if isinstance(obj, dict) and any(k in obj for k in CHECKPOINT_KEYS):
        if checkpoint_key not in obj:
            raise WeightsError(f"checkpoint has no {checkpoint_key!r} entry (it has {sorted(obj)}); "
                               f"set backbone.checkpoint_key to one of {[k for k in CHECKPOINT_KEYS if k in obj]}")
        meta = {k: obj[k] for k in ("epoch",) if k in obj}
        if isinstance(obj.get("args"), argparse.Namespace):
            meta["args"] = {k: str(v) for k, v in vars(obj["args"]).items()}
        if isinstance(obj.get("xferlab"), dict):
            meta["xferlab"] = obj["xferlab"]
        fmt = f"dino:{checkpoint_key}"
        obj = obj[checkpoint_key]
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict) and not _is_state_dict(obj):
            obj = obj[wrapper]
            fmt += f"/{wrapper}"
    if not _is_state_dict(obj):
        raise WeightsError("no state dict found in the checkpoint (expected a mapping of names to tensors, "
                           f"or a DINO checkpoint with {CHECKPOINT_KEYS}); found {type(obj).__name__}. Point "
                           "backbone.weights at the backbone's weights, or re-save them as a plain state dict")
    state, dropped = {}, []
    for key, tensor in obj.items():
        name = _strip(key)
        if name.startswith(HEAD_PREFIXES):
            dropped.append(key)
        else:
            state[name] = tensor
    return state, fmt, dropped, meta


def load_backbone_state(path: str | Path, checkpoint_key: str = "teacher", trust: bool = False) -> BackboneState:
    obj = read_file(path, trust=trust)
    try:
        state, fmt, dropped, meta = backbone_state(obj, checkpoint_key)
    except WeightsError as err:
        raise WeightsError(f"{path}: {err}") from err
    digest = file_sha256(path)
    check_lock(path, digest)
    log.info("read %s (%s, %d tensors, %d head keys dropped), sha256 %s", path, fmt, len(state), len(dropped), digest)
    return BackboneState(state=state, format=fmt, file_sha256=digest, dropped=dropped, meta=meta)


def released_file(name: str, weights: str | None, init: str, download: str, trust: bool,
                  model: str) -> tuple[BackboneState, str]:
    """The state of a model that only comes from its released file (`backbone.init=weights`), and
    the file as a source description: for backbones not built by timm (SubCell, OpenPhenom)."""
    if init != "weights":
        raise ValueError(f"backbone={name}: {model} comes from its released file; backbone.init={init!r} is not "
                         "supported (use init=weights)")
    path = resolve_weights(weights, name, download)
    loaded = load_backbone_state(path, trust=trust)
    return loaded, f"{path} ({loaded.format})"
