"""Fine-tuning: the backbone unfrozen and trained with the head, with a lower learning rate for
the backbone that decays layer by layer towards the input (layer-wise learning-rate decay)."""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from xferlab.heads.classifier import HeadClassifier


def layer_id(name: str, depth: int) -> int:
    """0 for the embeddings, i + 1 for block i, depth + 1 for everything after the blocks."""
    if name.startswith(("cls_token", "pos_embed", "reg_token", "patch_embed")):
        return 0
    match = re.match(r"blocks\.(\d+)\.", name)
    return int(match.group(1)) + 1 if match else depth + 1


def layerwise_groups(model: nn.Module, backbone_lr: float, decay: float, weight_decay: float) -> list[dict[str, Any]]:
    """Parameter groups with lr = backbone_lr * decay ** (depth + 1 - layer); no weight decay on
    biases, norms and tokens."""
    depth = len(getattr(model, "blocks", []))
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        layer = layer_id(name, depth)
        no_wd = p.ndim <= 1 or name.endswith(".bias") or name in ("cls_token", "pos_embed")
        group = groups.setdefault((layer, no_wd), {"params": [], "lr": backbone_lr * decay ** (depth + 1 - layer),
                                                   "weight_decay": 0.0 if no_wd else weight_decay})
        group["params"].append(p)
    return list(groups.values())


class FinetuneClassifier(HeadClassifier):
    """A head on an unfrozen backbone; batches are preprocessed images, not embeddings."""

    def __init__(self, backbone: nn.Module, head: nn.Module, class_names, optimizer, *, backbone_lr: float,
                 layer_decay: float, weight_decay: float, class_weights=None, average_over: str = "present"):
        super().__init__(head, class_names, optimizer, class_weights, average_over=average_over)
        self.backbone = backbone.train().requires_grad_(True)
        self.backbone_lr, self.layer_decay, self.weight_decay = backbone_lr, layer_decay, weight_decay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.head.parameters())
        for group in layerwise_groups(self.backbone.model, self.backbone_lr, self.layer_decay, self.weight_decay):
            optimizer.add_param_group(group)
        return optimizer
