"""`head=finetune`: the backbone unfrozen and trained with one head, with a lower learning rate
for the backbone that decays layer by layer towards the input (layer-wise learning-rate decay),
on preprocessed images instead of cached embeddings."""

from __future__ import annotations

import copy
import re
import time
from functools import partial
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from omegaconf import DictConfig
from torch import nn

from xferlab.backbones.weights import state_dict_sha256
from xferlab.data.splits import TRAIN
from xferlab.heads.base import IMAGES, HeadData, HeadResult, check_class_weights, class_weights
from xferlab.heads.classifier import HeadClassifier
from xferlab.heads.datamodule import EmbeddingDataModule
from xferlab.runtime.checkpointing import AtomicCheckpointIO


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


class FinetuneHead:
    """One `module` head (learning rate `lr`) on a copy of the backbone (learning rate
    `backbone_lr` for its last block, times `layer_decay` per layer towards the input), trained
    on preprocessed images with early stopping on validation macro F1; the best validation
    checkpoint (a file under `checkpoints/` of the run folder) is tested once."""

    inputs = IMAGES

    def __init__(self, name: str, module: Any, optimizer: Any, lr: float = 1e-3, weight_decay: float = 1e-4,
                 backbone_lr: float = 1e-4, layer_decay: float = 0.75, backbone_weight_decay: float = 0.05,
                 class_weights: str = "none", batch_size: int = 64, max_epochs: int = 8, patience: int = 3):
        self.name, self.module, self.optimizer = name, module, optimizer
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.backbone_lr, self.layer_decay = float(backbone_lr), float(layer_decay)
        self.backbone_weight_decay = float(backbone_weight_decay)
        self.class_weights = check_class_weights(class_weights)
        self.batch_size, self.max_epochs, self.patience = int(batch_size), int(max_epochs), int(patience)

    def check(self, *, multilabel: bool, multi_view: bool) -> None:
        if multilabel:
            raise ValueError("head=finetune trains on single-label data; this dataset's label rule is multilabel "
                             "(use dataset.labels.rule=single_grade3, or a frozen-embedding head)")
        if multi_view:
            raise ValueError("head=finetune needs one backbone input per image; this channel strategy embeds each "
                             "channel on its own (use channels=natural, replicate or random_order)")

    def fit(self, data: HeadData) -> HeadResult:
        import lightning as L

        L.seed_everything(int(data.seed), workers=True, verbose=False)
        started = time.perf_counter()
        batches = EmbeddingDataModule(data.features, data.labels, data.split, batch_size=self.batch_size,
                                      seed=data.seed)
        head = instantiate(DictConfig(self.module), in_dim=data.backbone.embed_dim, num_classes=len(data.classes))
        weights = class_weights(data.labels[data.split == TRAIN], len(data.classes), self.class_weights)
        tuned = copy.deepcopy(data.backbone)
        if hasattr(head, "norm") and hasattr(head.norm, "fit"):
            with torch.no_grad():
                head.norm.fit(torch.cat([tuned(x) for x in batches.train_features().split(256)]))
        optimizer = partial(instantiate(DictConfig(self.optimizer)), lr=self.lr, weight_decay=self.weight_decay)
        model = FinetuneClassifier(tuned, head, data.classes, optimizer, backbone_lr=self.backbone_lr,
                                   layer_decay=self.layer_decay, weight_decay=self.backbone_weight_decay,
                                   class_weights=weights, average_over=data.average_over)
        head_sha_before = state_dict_sha256(head)
        checkpoint = ModelCheckpoint(dirpath=data.run_dir / "checkpoints", filename="best", monitor="val/macro_f1",
                                     mode="max", save_top_k=1, enable_version_counter=False)
        stopper = EarlyStopping(monitor="val/macro_f1", mode="max", patience=self.patience)
        trainer = data.make_trainer(max_epochs=self.max_epochs, callbacks=[checkpoint, stopper], logger=data.loggers,
                                    enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
                                    default_root_dir=str(data.run_dir), plugins=[AtomicCheckpointIO()])
        trainer.fit(model, datamodule=batches)
        fit_seconds = time.perf_counter() - started
        trainer.test(model, datamodule=batches, ckpt_path="best", verbose=False)
        info = {"fit_seconds": fit_seconds, "epochs": int(trainer.current_epoch),
                "head_sha256_before": head_sha_before, "head_sha256_after": state_dict_sha256(head),
                "best_checkpoint": checkpoint.best_model_path}
        return HeadResult(rows=torch.cat(model.test_rows).numpy(), scores=torch.cat(model.test_scores).numpy(),
                          selection={"val/macro_f1": float(checkpoint.best_model_score)}, info=info, module=head)
