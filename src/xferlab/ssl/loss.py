"""DINO's loss: cross-entropy between the sharpened, centred teacher distribution of each global
view and the student distribution of every other view; the centre is an EMA of teacher outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DINOLoss(nn.Module):
    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student_out: list[torch.Tensor], teacher_out: list[torch.Tensor], teacher_temp: float):
        """`student_out`: logits of all views (globals first); `teacher_out`: logits of the globals.
        Returns the loss and the teacher probabilities (for monitoring)."""
        teacher_probs = [F.softmax((t - self.center) / teacher_temp, dim=-1).detach() for t in teacher_out]
        student_logp = [F.log_softmax(s / self.student_temp, dim=-1) for s in student_out]
        total, terms = 0.0, 0
        for i, q in enumerate(teacher_probs):
            for j, logp in enumerate(student_logp):
                if i == j:
                    continue
                total = total + (-q * logp).sum(dim=-1).mean()
                terms += 1
        self.update_center(torch.cat(teacher_out))
        return total / terms, teacher_probs

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        batch_center = teacher_logits.mean(dim=0, keepdim=True)
        self.center.mul_(self.center_momentum).add_(batch_center * (1 - self.center_momentum))


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean entropy of rows of probabilities (collapse to one prototype drives it to 0)."""
    return -(probs * probs.clamp_min(1e-12).log()).sum(dim=-1).mean()
