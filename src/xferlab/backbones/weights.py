"""Fingerprinting weights and loading them strictly.

The file digest is `runtime.integrity.file_sha256` (one hash function for every file xferlab
checks), re-exported here for the weights code. Reading checkpoint files is `checkpoints.read_file`;
where weight files live and where the public ones come from is `locations`; downloading them is
`download`.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from xferlab.runtime.integrity import file_sha256

if TYPE_CHECKING:  # torch is imported where it is used, so the preflight starts without it
    import torch
    from torch import nn

__all__ = ["WeightsError", "file_sha256", "load_strict", "state_dict_sha256"]


class WeightsError(RuntimeError):
    """A weights file is missing, unreadable, or does not fit the model."""


def state_dict_sha256(module: nn.Module) -> str:
    """sha256 over every tensor of a module's state dict (names, dtypes, shapes and bytes)."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


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
