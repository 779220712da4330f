"""Regularised logistic regression fitted to convergence in torch: the arithmetic of the linear
probe (`heads.probe`), on any device.

The objective, for weights `W (K, D)` and biases `b (K,)` on standardised features `x`:

    f(W, b) = sum_i w_i loss(x_i W^T + b, y_i) / sum_i w_i  +  l2 / 2 * ||W||^2

with `loss` the softmax cross-entropy of the class index `y_i` (single-label) or the sum over
classes of the binary cross-entropy of the soft targets `y_ik` in [0, 1] (multilabel; graded
labels stay soft), `w_i` the sample weight (class weights, or 1) and the biases unpenalised.
This is scikit-learn's `LogisticRegression` objective with `C = 1 / (l2 * n)` (its loss is the
mean, its penalty `||W||^2 / (2 C n)`), which the tests check coefficient by coefficient.

Loss and gradient are computed analytically, chunk by chunk (`Rows`), so memory is bounded by one
chunk of rows whatever the number of embeddings: the same objective, summed over chunks, whether
the rows are resident on the device or streamed from the host. L-BFGS (two-loop recursion,
backtracking line search), in variables preconditioned by the training correlation matrix's
eigenbasis (`Preconditioner`), minimises it until the largest gradient entry is below `tol`
(scikit-learn's own criterion and default, 1e-4) or a relative bound for weak penalties
(`minimise`), in float64 by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch


@dataclass
class Rows:
    """Training rows as chunks: standardised features `(n, D)` and targets, each chunk on the
    device already (`resident`) or moved there when used. `x` may be any array with row slicing
    (numpy, a memory map, a zarr array); `mean` / `std` standardise it on the fly."""

    x: object
    y: np.ndarray
    weight: np.ndarray | None
    mean: np.ndarray
    std: np.ndarray
    device: torch.device
    dtype: torch.dtype
    chunk_rows: int
    resident: bool
    k: int

    def __post_init__(self) -> None:
        self.n = int(len(self.y))
        self.total_weight = float(self.n if self.weight is None else np.sum(self.weight, dtype=np.float64))
        self._mean = torch.as_tensor(self.mean, dtype=self.dtype, device=self.device)
        self._std = torch.as_tensor(self.std, dtype=self.dtype, device=self.device)
        self._cache = [self._load(a, b) for a, b in self._bounds()] if self.resident else None

    def _bounds(self) -> list[tuple[int, int]]:
        step = max(1, int(self.chunk_rows))
        return [(a, min(a + step, self.n)) for a in range(0, self.n, step)]

    def _load(self, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        x = torch.as_tensor(np.asarray(self.x[a:b]), device=self.device).to(self.dtype)
        x = (x - self._mean) / self._std
        y = torch.as_tensor(np.asarray(self.y[a:b]), device=self.device)
        y = y.to(self.dtype) if y.ndim == 2 else y.long()
        w = None if self.weight is None else torch.as_tensor(self.weight[a:b], dtype=self.dtype, device=self.device)
        return x, y, w

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        if self._cache is not None:
            yield from self._cache
        else:
            for a, b in self._bounds():
                yield self._load(a, b)


def standardisation(x, rows: np.ndarray, chunk_rows: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation (ddof 0, floored at 1e-6) of `x[rows]`, in
    float64, chunk by chunk."""
    total, squares, n = 0.0, 0.0, 0
    for a in range(0, len(rows), chunk_rows):
        chunk = np.asarray(x[np.sort(rows[a:a + chunk_rows])], dtype=np.float64)
        total, squares, n = total + chunk.sum(axis=0), squares + (chunk ** 2).sum(axis=0), n + len(chunk)
    if n == 0:
        raise ValueError("no training rows to standardise the embeddings with")
    mean = total / n
    std = np.sqrt(np.maximum(squares / n - mean ** 2, 0.0))
    return mean, np.maximum(std, 1e-6)


def loss_and_grad(theta: torch.Tensor, rows: Rows, l2: float, multilabel: bool,
                  pos_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The objective and its gradient at `theta` `(K, D + 1)` (weights, then the bias column)."""
    w, b = theta[:, :-1], theta[:, -1]
    loss = torch.zeros((), dtype=theta.dtype, device=theta.device)
    grad = torch.zeros_like(theta)
    for x, y, sw in rows:
        z = torch.addmm(b, x, w.T)
        if multilabel:
            pw = 1.0 if pos_weight is None else pos_weight
            # -[pw y log s(z) + (1 - y) log(1 - s(z))], written with softplus for stability
            per = pw * y * torch.nn.functional.softplus(-z) + (1 - y) * torch.nn.functional.softplus(z)
            dz = torch.sigmoid(z) * (pw * y + 1 - y) - pw * y
            per = per.sum(dim=1)
        else:
            logp = torch.log_softmax(z, dim=1)
            per = -logp.gather(1, y[:, None])[:, 0]
            dz = logp.exp()
            dz[torch.arange(len(y), device=dz.device), y] -= 1
        if sw is not None:
            per, dz = per * sw, dz * sw[:, None]
        loss += per.sum()
        grad[:, :-1] += dz.T @ x
        grad[:, -1] += dz.sum(dim=0)
    loss, grad = loss / rows.total_weight, grad / rows.total_weight
    loss += 0.5 * l2 * (w * w).sum()
    grad[:, :-1] += l2 * w
    return loss, grad


def curvature(rows: Rows, theta: torch.Tensor, multilabel: bool) -> float:
    """The mean over training rows and classes of `p (1 - p)` at `theta`: the scale of the data
    term's curvature."""
    total = 0.0
    for x, _, _ in rows:
        z = torch.addmm(theta[:, -1], x, theta[:, :-1].T)
        p = torch.sigmoid(z) if multilabel else torch.softmax(z, dim=1)
        total += float((p * (1 - p)).mean(dim=1).sum())
    return total / max(rows.n, 1)


def correlation_eigen(rows: Rows) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues and eigenvectors `(D, r)` of the standardised training rows' correlation
    matrix `x^T x / n`, in float64, keeping only directions with variance: when `D > n` they come
    from the `n x n` Gram matrix (resident rows), and the rest, which the data never reach and the
    penalty holds at zero, are left out."""
    dim = len(rows.mean)
    if rows.resident and dim > rows.n:
        x = torch.cat([chunk for chunk, _, _ in rows]).double()
        values, q = torch.linalg.eigh(x @ x.T / rows.n)
        keep = values > values.max().clamp_min(1e-300) * 1e-10
        values, q = values[keep], q[:, keep]
        vectors = (x.T @ q) / (values * rows.n).sqrt()
        return values, vectors
    total = torch.zeros(dim, dim, dtype=torch.float64, device=rows.device)
    for x, _, _ in rows:
        x = x.double()
        total += x.T @ x
    values, vectors = torch.linalg.eigh(total / max(rows.n, 1))
    return values.clamp_min(0), vectors


class Preconditioner:
    """A change of variables that makes L-BFGS converge in far fewer iterations without changing
    the objective: `W = (V * s) U^T`, with `U, lam` the eigenvectors and eigenvalues of the
    training correlation matrix (`correlation_eigen`) and `s = (lam + l2 / a)^(-1/2)`, `a` the
    data term's curvature at the starting point (`curvature`). Embeddings are strongly correlated
    (condition numbers of 1e8 are common), so in `W` the loss is badly conditioned; in `V` the data
    term and the penalty have similar curvature in every direction. The minimum in `W` is the
    same: only the path L-BFGS takes to it changes (and directions without training variance,
    where the optimum is zero, are not searched)."""

    def __init__(self, rows: Rows):
        values, vectors = correlation_eigen(rows)
        self.values, self.vectors = values.to(rows.dtype), vectors.to(rows.dtype)
        self.scale = torch.ones_like(self.values)

    def set_strength(self, l2: float, curvature: float) -> None:
        self.scale = (self.values + max(l2, 1e-300) / max(curvature, 1e-12)).rsqrt()

    def to_v(self, theta: torch.Tensor) -> torch.Tensor:
        """`(K, D + 1)` weights and bias -> `(K, r + 1)` search variables."""
        return torch.cat([(theta[:, :-1] @ self.vectors) / self.scale, theta[:, -1:]], dim=1)

    def to_w(self, v: torch.Tensor) -> torch.Tensor:
        return torch.cat([(v[:, :-1] * self.scale) @ self.vectors.T, v[:, -1:]], dim=1)

    def grad_to_v(self, grad: torch.Tensor) -> torch.Tensor:
        return torch.cat([(grad[:, :-1] @ self.vectors) * self.scale, grad[:, -1:]], dim=1)


@dataclass
class Fit:
    theta: torch.Tensor
    loss: float
    grad_max: float
    iterations: int
    converged: bool


def minimise(theta: torch.Tensor, rows: Rows, l2: float, multilabel: bool, pre: Preconditioner | None = None,
             pos_weight: torch.Tensor | None = None, tol: float = 1e-4, rtol: float = 0.01, max_iter: int = 1000,
             history: int = 20) -> Fit:
    """L-BFGS from `theta` `(K, D + 1)`, in the preconditioned variables of `pre` when given,
    until the largest entry of the objective's gradient (in `W`, as scikit-learn measures it) is
    at most `min(tol, rtol * l2 * max(max|W|, 1))`, or `max_iter` iterations.

    The relative part matters for weak penalties: the objective is `l2`-strongly convex, so a
    gradient `g` leaves the weights within `|g| / l2` of the optimum, and an absolute tolerance
    alone would stop a weakly penalised fit almost where it started (scikit-learn's warm-started
    path does). Each step is the two-loop L-BFGS direction with a backtracking (Armijo) line
    search that tries the full step first."""
    if pre is not None:
        pre.set_strength(l2, curvature(rows, theta, multilabel))
        to_v, to_w, grad_to_v = pre.to_v, pre.to_w, pre.grad_to_v
    else:
        to_v = to_w = grad_to_v = lambda t: t

    def evaluate(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        w = to_w(v)
        loss, grad = loss_and_grad(w, rows, l2, multilabel, pos_weight)
        return loss, grad, w

    v = to_v(theta.detach())
    loss, grad_w, w = evaluate(v)
    grad = grad_to_v(grad_w)
    steps: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (s, y, 1 / y.s)
    iterations = 0
    while True:
        grad_max = float(grad_w.abs().max())
        limit = min(tol, rtol * l2 * max(float(w[:, :-1].abs().max()), 1.0))
        if grad_max <= limit or iterations >= max_iter:
            break
        direction = -_two_loop(grad, steps)
        slope = float((grad * direction).sum())
        if slope >= 0:  # not a descent direction (curvature pairs gone stale): restart from the gradient
            steps.clear()
            direction, slope = -grad, -float((grad * grad).sum())
        step, accepted = 1.0, False
        for _ in range(40):
            trial = v + step * direction
            new_loss, new_grad_w, new_w = evaluate(trial)
            if float(new_loss) <= float(loss) + 1e-4 * step * slope:
                accepted = True
                break
            step *= 0.5
        if not accepted:  # no decrease representable in this precision: as converged as it gets
            break
        new_grad = grad_to_v(new_grad_w)
        s_k, y_k = trial - v, new_grad - grad
        ys = float((y_k * s_k).sum())
        if ys > 1e-12 * float((y_k * y_k).sum()):
            steps.append((s_k, y_k, 1.0 / ys))
            if len(steps) > history:
                steps.pop(0)
        v, loss, grad, grad_w, w = trial, new_loss, new_grad, new_grad_w, new_w
        iterations += 1
    return Fit(theta=w.detach(), loss=float(loss), grad_max=grad_max, iterations=iterations,
               converged=grad_max <= limit)


def _two_loop(grad: torch.Tensor, steps: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The L-BFGS product of the inverse Hessian estimate with `grad`."""
    q = grad.clone()
    alphas = []
    for s_k, y_k, rho in reversed(steps):
        alpha = rho * float((s_k * q).sum())
        q -= alpha * y_k
        alphas.append(alpha)
    if steps:
        s_k, y_k, rho = steps[-1]
        q *= 1.0 / (rho * float((y_k * y_k).sum()))
    for (s_k, y_k, rho), alpha in zip(steps, reversed(alphas)):
        beta = rho * float((y_k * q).sum())
        q += (alpha - beta) * s_k
    return q


def scores(theta: torch.Tensor, x: np.ndarray, mean: np.ndarray, std: np.ndarray, multilabel: bool,
           chunk_rows: int = 65536) -> np.ndarray:
    """Class probabilities `(n, K)` of raw embeddings `x` (softmax, or per-class sigmoid)."""
    w, b = theta[:, :-1], theta[:, -1]
    mean_t = torch.as_tensor(mean, dtype=theta.dtype, device=theta.device)
    std_t = torch.as_tensor(std, dtype=theta.dtype, device=theta.device)
    out = []
    for a in range(0, len(x), chunk_rows):
        chunk = (torch.as_tensor(np.asarray(x[a:a + chunk_rows]), device=theta.device).to(theta.dtype) - mean_t) / std_t
        z = torch.addmm(b, chunk, w.T)
        out.append((torch.sigmoid(z) if multilabel else torch.softmax(z, dim=1)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, theta.shape[0]), dtype=np.float32)
