"""Reading weight files strictly and fingerprinting weights."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn


class WeightsError(RuntimeError):
    """A weights file is missing, unreadable, or does not fit the model."""


def state_dict_sha256(module: nn.Module) -> str:
    """sha256 over every tensor of a module's state dict (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A plain state dict from a `.safetensors` file or a `.pth` / `.pt` file (tensors only)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; set backbone.weights to a checkpoint file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file named
        raise WeightsError(f"cannot read weights file {path}: {err}") from err
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} is not a plain state dict (a mapping of names to tensors)")
    return obj


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load every key or fail, listing the keys and shapes that do not match."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        raise WeightsError(
            f"weights from {source} do not fit the model: missing {missing[:10]} "
            f"({len(missing)}), unexpected {unexpected[:10]} ({len(unexpected)}), "
            f"shape mismatches {mismatched[:10]}. The file holds another architecture: set backbone.arch / "
            "backbone.model_kwargs to the checkpoint's, or use a checkpoint made for this backbone"
        )
    model.load_state_dict(state, strict=True)
