"""The DINO LightningModule: student and EMA teacher ViTs with projection heads, multi-crop loss
with teacher centring and temperature warm-up, cosine schedules for learning rate, weight decay
and teacher momentum, last layer frozen during the first epoch(s), and monitors for collapse
(teacher entropy) and for what was learned (kNN accuracy on the validation split)."""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from xferlab.ssl.head import DINOHead
from xferlab.ssl.loss import DINOLoss, entropy
from xferlab.ssl.schedules import cosine_schedule, teacher_temperature


class DINOModule(L.LightningModule):
    def __init__(self, backbone: nn.Module, *, steps_per_epoch: int, epochs: int, out_dim: int = 1024,
                 head_hidden: int = 512, bottleneck: int = 128, lr: float = 1e-3, min_lr: float = 1e-5,
                 warmup_epochs: float = 1.0, weight_decay: float = 0.04, weight_decay_end: float = 0.4,
                 momentum: float = 0.99, warmup_teacher_temp: float = 0.04, teacher_temp: float = 0.06,
                 teacher_temp_warmup_epochs: float = 2.0, student_temp: float = 0.1, freeze_last_layer: int = 1,
                 knn_k: int = 20, knn_data: dict[str, torch.Tensor] | None = None, head_bn: bool = False):
        super().__init__()
        dim = int(backbone.num_features)
        head = DINOHead(dim, out_dim, head_hidden, bottleneck, use_bn=head_bn)
        self.student = nn.ModuleDict({"backbone": backbone, "head": head})
        self.teacher = copy.deepcopy(self.student)
        self.teacher.requires_grad_(False)
        self.loss_fn = DINOLoss(out_dim, student_temp=student_temp)
        total = steps_per_epoch * epochs
        warm = int(warmup_epochs * steps_per_epoch)
        self.lr_schedule = cosine_schedule(lr, min_lr, total, warm)
        self.wd_schedule = cosine_schedule(weight_decay, weight_decay_end, total)
        self.momentum_schedule = cosine_schedule(momentum, 1.0, total)
        self.temp_schedule = teacher_temperature(warmup_teacher_temp, teacher_temp,
                                                 int(teacher_temp_warmup_epochs * steps_per_epoch), total)
        self.freeze_last_layer = freeze_last_layer
        self.knn_k = knn_k
        self.knn_data = knn_data

    def _step_index(self) -> int:
        return min(int(self.global_step), len(self.lr_schedule) - 1)

    def training_step(self, views: list[torch.Tensor], batch_idx: int):
        step = self._step_index()
        n_global, batch = 2, views[0].shape[0]
        with torch.no_grad():
            t = self.teacher["head"](self.teacher["backbone"](torch.cat(views[:n_global])))
        s_global = self.student["head"](self.student["backbone"](torch.cat(views[:n_global])))
        student_out = list(s_global.chunk(n_global))
        if len(views) > n_global:
            s_local = self.student["head"](self.student["backbone"](torch.cat(views[n_global:])))
            student_out += list(s_local.chunk(len(views) - n_global))
        loss, teacher_probs = self.loss_fn(student_out, list(t.chunk(n_global)), float(self.temp_schedule[step]))
        probs = torch.cat(teacher_probs)
        self.log_dict({"train/loss": loss, "train/teacher_entropy": entropy(probs),
                       "train/teacher_mean_entropy": entropy(probs.mean(0, keepdim=True)),
                       "train/lr": float(self.lr_schedule[step]), "train/teacher_temp": float(self.temp_schedule[step])},
                      on_step=True, on_epoch=True, batch_size=batch)
        return loss

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        step = self._step_index()
        for group in self.optimizers().param_groups:
            group["lr"] = float(self.lr_schedule[step])
            if group.get("apply_wd", True):
                group["weight_decay"] = float(self.wd_schedule[step])

    def on_after_backward(self) -> None:
        if self.current_epoch < self.freeze_last_layer:
            for p in self.student["head"].last_layer_parameters():
                p.grad = None

    @torch.no_grad()
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        m = float(self.momentum_schedule[min(int(self.global_step) - 1, len(self.momentum_schedule) - 1)])
        for ps, pt in zip(self.student.parameters(), self.teacher.parameters()):
            pt.mul_(m).add_(ps.detach(), alpha=1 - m)

    def on_train_epoch_end(self) -> None:
        if self.knn_data is not None:
            self.log("val/knn_accuracy", self.knn_accuracy(), prog_bar=False)

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """L2-normalised teacher embeddings, in eval mode; the teacher's mode is restored after, so
        watching a run never changes how it trains (DINO's teacher normalises with batch statistics)."""
        backbone = self.teacher["backbone"]
        was_training = backbone.training
        backbone.eval()
        try:
            return torch.cat([F.normalize(backbone(images[i : i + batch].to(self.device)), dim=1)
                              for i in range(0, len(images), batch)])
        finally:
            backbone.train(was_training)

    def knn_accuracy(self) -> float:
        """Accuracy of a cosine kNN (k = `knn_k`, majority vote) of teacher embeddings: training
        images as the memory, validation images as queries."""
        d = self.knn_data
        bank, queries = self.embed(d["train_images"]), self.embed(d["val_images"])
        sims = queries @ bank.T
        idx = sims.topk(min(self.knn_k, len(bank)), dim=1).indices
        votes = d["train_labels"].to(idx.device)[idx]
        pred = torch.mode(votes, dim=1).values
        return float((pred == d["val_labels"].to(pred.device)).float().mean())

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.student.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        return torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0, "apply_wd": False}],
                                 lr=float(self.lr_schedule[0]))

    def dino_checkpoint(self, args: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        """DINO's own layout: teacher keys `backbone.` / `head.`, student keys `module.backbone.` /
        `module.head.`, plus optimizer, epoch, args (an argparse.Namespace) and the loss centre."""
        import argparse

        teacher = {f"{k}": v.detach().cpu() for k, v in self.teacher.state_dict().items()}
        student = {f"module.{k}": v.detach().cpu() for k, v in self.student.state_dict().items()}
        return {"teacher": teacher, "student": student, "epoch": int(self.current_epoch) + 1,
                "args": argparse.Namespace(**args), "dino_loss": {"center": self.loss_fn.center.detach().cpu()},
                "optimizer": self.optimizers().optimizer.state_dict() if self.trainer else {}, "xferlab": meta}
