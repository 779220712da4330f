"""Head modules: embeddings `(B, D)` -> logits `(B, K)`, and a grid of heads `(B, D)` -> `(G, B, K)`.

Each head normalises its input with statistics of the training split, held as buffers so a saved
head carries them:
- `standardize`: per-dimension z-score.
- `whiten` (ZCA): z-score, then multiply by the inverse square root of the training correlation
  matrix shrunk towards the identity (`C + shrinkage * I`). Backbone embeddings are strongly
  correlated (condition numbers of 1e8 are common), which makes gradient descent on the raw
  features slow; whitened, a linear head converges in a few epochs. A linear head on whitened
  features is still a linear classifier of the embeddings; the shrinkage keeps directions with
  almost no training variance from being blown up.
- `none`: the embeddings as they are.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

NORMS = ("standardize", "whiten", "none")


class FeatureNorm(nn.Module):
    """`(x - mean) @ matrix`, where `matrix` is `diag(1 / std)` (standardize) or
    `diag(1 / std) @ (C + shrinkage I)^(-1/2)` (whiten); fitted on training features."""

    def __init__(self, dim: int, whiten: bool = False, shrinkage: float = 0.1):
        super().__init__()
        if shrinkage <= 0:
            raise ValueError(f"whitening shrinkage={shrinkage}: choose a value > 0 (e.g. 0.1)")
        self.whiten, self.shrinkage = bool(whiten), float(shrinkage)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        if self.whiten:
            self.register_buffer("matrix", torch.eye(dim))

    @torch.no_grad()
    def fit(self, features: torch.Tensor) -> None:
        x = features.detach().to(torch.float64)
        mean, std = x.mean(dim=0), x.std(dim=0).clamp_min(1e-6)
        self.mean.copy_(mean)
        self.std.copy_(std)
        if self.whiten:
            z = ((x - mean) / std).float()  # the product in float32 (fast); the shrinkage dwarfs its error
            corr = (z.T @ z).double() / max(len(z) - 1, 1)
            values, vectors = torch.linalg.eigh(corr)
            inv_sqrt = (vectors * (values.clamp_min(0) + self.shrinkage).rsqrt()) @ vectors.T
            self.matrix.copy_(inv_sqrt / std[:, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.whiten:
            return (x - self.mean) @ self.matrix
        return (x - self.mean) / self.std


def make_norm(norm: str, dim: int, shrinkage: float = 0.1) -> nn.Module:
    if norm not in NORMS:
        raise ValueError(f"head norm={norm!r}; choose one of {NORMS}")
    if norm == "none":
        return nn.Identity()
    return FeatureNorm(dim, whiten=norm == "whiten", shrinkage=shrinkage)


class LinearHead(nn.Module):
    def __init__(self, in_dim: int, num_classes: int, norm: str = "standardize", shrinkage: float = 0.1):
        super().__init__()
        self.norm = make_norm(norm, in_dim, shrinkage)
        self.fc = nn.Linear(in_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x))


class MLPHead(nn.Module):
    def __init__(self, in_dim: int, num_classes: int, hidden_dim: int = 256, dropout: float = 0.1,
                 norm: str = "standardize", shrinkage: float = 0.1):
        super().__init__()
        self.norm = make_norm(norm, in_dim, shrinkage)
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x))


class HeadGrid(nn.Module):
    """`G` heads of one kind on one shared input normalisation: normalised features `(B, D)` ->
    logits `(G, B, K)`.

    The heads are given already built (each with its own initialisation). Their `norm` moves to
    the grid (`grid.norm`, from the first head) and `forward` expects features it has already
    normalised (`grid.norm(x)`), so that the embeddings can be normalised once rather than per
    batch and per head; `head(g)` rebuilds member `g` as a standalone head of raw embeddings.
    Every member keeps its own parameters (`members[g]`), so an optimizer can give each its own
    parameter group; an all-linear grid runs as one matrix product.
    """

    def __init__(self, heads: list[nn.Module]):
        super().__init__()
        if not heads:
            raise ValueError("a head grid needs at least one head")
        self.norm = heads[0].norm if hasattr(heads[0], "norm") else nn.Identity()
        for head in heads:  # the grid owns its heads: each loses its own norm
            if hasattr(head, "norm"):
                head.norm = nn.Identity()
        self.members = nn.ModuleList(heads)
        self.linear = all(isinstance(m, LinearHead) for m in heads)

    def __len__(self) -> int:
        return len(self.members)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.linear:  # (B, D) @ (D, G * K): every member in one product
            weight = torch.cat([m.fc.weight for m in self.members])  # (G * K, D)
            bias = torch.cat([m.fc.bias for m in self.members])
            return torch.addmm(bias, z, weight.T).view(len(z), len(self.members), -1).transpose(0, 1)
        return torch.stack([m(z) for m in self.members])

    @torch.no_grad()
    def normalise(self, x: torch.Tensor, batch: int = 65536) -> torch.Tensor:
        """`norm(x)`, in chunks."""
        return torch.cat([self.norm(chunk) for chunk in x.split(batch)]) if len(x) else x

    def head(self, g: int, state: dict[str, torch.Tensor] | None = None) -> nn.Module:
        """Member `g` as a standalone head of raw embeddings (a copy, with the grid's norm),
        optionally with the member parameters `state` (a `members[g].state_dict()`) loaded."""
        member = copy.deepcopy(self.members[g])
        if state is not None:
            member.load_state_dict(state)
        if hasattr(member, "norm"):
            member.norm = copy.deepcopy(self.norm)
        return member
