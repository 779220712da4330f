"""Intervals and p-values from the bootstrap over test proteins (`reporting.stats.Bootstrap`).

A quantity's bootstrap result is a `Replicates`: its point estimate (all test proteins once), its
value in every draw, and each test protein's empirical influence from a stratified jackknife.

`method="bca"` (the report's): the bias-corrected and accelerated percentile interval (Efron 1987).
- bias correction `z0 = Phi^-1(share of draws below the point)`, ties counted half: macro F1 is a
  mean of ratios, and ratios of small counts are biased; the draws show by how much, and `z0`
  moves the percentiles to undo it.
- acceleration `a = sum(l^3) / (6 (sum(l^2))^1.5)` over the influence values `l` of the test
  proteins: how the spread changes with the value (skewness).
- the interval at level `1 - alpha` is the `Phi(z0 + (z0 + z) / (1 - a (z0 + z)))` quantiles of the
  draws, `z = Phi^-1(alpha / 2)` and `Phi^-1(1 - alpha / 2)`.
`method="percentile"`: the plain percentile interval (`z0 = a = 0`), the report's earlier method.
`method="basic"`: the draws' percentiles reflected about the point (`2 point - q`).

Why BCa: the calibration simulation (`reporting.calibration`, docs/calibration.md) shows that on
the report's draws (Rao-Wu, centred where plain within-class draws are: `stats.RESAMPLING`) it
covers the truth 94-96 % of the time for crop and protein macro F1 and for paired differences,
with truths below and above the interval about equally often. The percentile interval
misses macro F1 from above (the estimate is biased low, the draws more so: 82 % coverage per
protein). The basic interval corrects that shift and covers as often, but reflecting the draws
turns their skewness the wrong way round, so its misses are lopsided (per protein 3.4 % below, 1.4 %
above, against BCa's 2.9 % / 2.2 %). A studentised interval would need a standard error inside
each of thousands of draws (a jackknife or second bootstrap per draw), for no gap left to close.

Quantiles and the p-value read one empirical distribution function of the draws: at each distinct
draw value, the share of draws below it plus half the share equal to it, joined linearly. The
quantile function is its exact inverse, so the p-value (the smallest `alpha` at which the interval
leaves 0 out) and the interval never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

METHODS = ("bca", "percentile", "basic")
_NORMAL = NormalDist()
_cdf = np.vectorize(_NORMAL.cdf, otypes=[float])


def _ppf(p: np.ndarray) -> np.ndarray:
    """Phi^-1 that gives -inf / +inf at 0 / 1."""
    p = np.asarray(p, dtype=float)
    out = np.where(p <= 0, -np.inf, np.inf)
    inside = (p > 0) & (p < 1)
    out[inside] = np.vectorize(_NORMAL.inv_cdf, otypes=[float])(p[inside])
    return out


@dataclass(frozen=True)
class Replicates:
    """One quantity (a scalar, or one value per class along the last axis) from the bootstrap:
    `point` `(...)`, `draws` `(B, ...)`, and `influence` `(N, ...)`: each test protein's influence
    on the point (every split's proteins in the bootstrap's order; 0 for proteins of splits the
    quantity does not use, and for classes with a single test protein, which cannot vary)."""

    point: np.ndarray
    draws: np.ndarray
    influence: np.ndarray

    def __sub__(self, other: "Replicates") -> "Replicates":
        """The paired difference: the same draws and proteins on both sides."""
        if self.draws.shape != other.draws.shape or self.influence.shape != other.influence.shape:
            raise ValueError("a paired difference needs the same bootstrap draws and test proteins on both sides")
        return Replicates(self.point - other.point, self.draws - other.draws, self.influence - other.influence)

    @property
    def n_boot(self) -> int:
        return len(self.draws)

    def bias(self) -> np.ndarray:
        """`z0`: Phi^-1 of the share of draws below the point (ties counted half), kept within
        half a draw of 0 and 1 so that it stays finite."""
        below = (self.draws < self.point).mean(axis=0) + 0.5 * (self.draws == self.point).mean(axis=0)
        half = 0.5 / self.n_boot
        return _ppf(np.clip(below, half, 1 - half))

    def acceleration(self) -> np.ndarray:
        """`a` from the influence values (0 when they are all 0)."""
        l2 = (self.influence ** 2).sum(axis=0)
        l3 = (self.influence ** 3).sum(axis=0)
        return np.where(l2 > 0, l3 / (6 * np.where(l2 > 0, l2, 1.0) ** 1.5), 0.0)


def _corrections(rep: Replicates, method: str) -> tuple[np.ndarray, np.ndarray]:
    if method not in METHODS:
        raise ValueError(f"interval method {method!r}; choose one of {METHODS}")
    if method in ("percentile", "basic"):
        zeros = np.zeros(np.shape(rep.point))
        return zeros, zeros
    return rep.bias(), rep.acceleration()


def _adjusted(z: float, z0: np.ndarray, a: np.ndarray) -> np.ndarray:
    """The share of draws below an endpoint: `Phi(z0 + (z0 + z) / (1 - a (z0 + z)))`."""
    y = z0 + z
    return _cdf(z0 + y / np.maximum(1 - a * y, 1e-9))


def _ecdf(column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct draw values and, at each, the share of draws below it plus half the share equal."""
    values, counts = np.unique(column, return_counts=True)
    return values, (np.cumsum(counts) - 0.5 * counts) / len(column)


def quantile(column: np.ndarray, share: float) -> float:
    """The inverse of the draws' distribution function (`_ecdf`, joined linearly)."""
    values, position = _ecdf(column)
    return float(np.interp(share, position, values))


def share_below(column: np.ndarray, x: float) -> float:
    """The draws' distribution function at `x`: 0 below every draw, 1 above every draw."""
    values, position = _ecdf(column)
    if x < values[0]:
        return 0.0
    if x > values[-1]:
        return 1.0
    return float(np.interp(x, values, position))


def interval(rep: Replicates, level: float = 0.95, method: str = "bca") -> tuple[np.ndarray, np.ndarray]:
    """The two-sided interval at `level`: `(low, high)`, scalars or one per class."""
    z0, a = _corrections(rep, method)
    alpha = (1 - level) / 2
    low_share, high_share = _adjusted(_NORMAL.inv_cdf(alpha), z0, a), _adjusted(_NORMAL.inv_cdf(1 - alpha), z0, a)
    draws = rep.draws.reshape(rep.n_boot, -1)
    low = np.array([quantile(draws[:, j], s) for j, s in enumerate(np.ravel(low_share))])
    high = np.array([quantile(draws[:, j], s) for j, s in enumerate(np.ravel(high_share))])
    shape = np.shape(rep.point)
    low, high = low.reshape(shape), high.reshape(shape)
    if method == "basic":
        return 2 * rep.point - high, 2 * rep.point - low
    return low, high


def bootstrap_p(rep: Replicates, method: str = "bca", null: float = 0.0) -> float:
    """Two-sided p-value of a scalar quantity being `null`: the smallest `alpha` at which the
    `1 - alpha` interval of `method` leaves `null` out (found by inverting the endpoint formula at
    the share of draws below `null`). With `a = z0 = 0` it is twice the smaller share of draws on
    either side. Never below 2 / (B + 1), the smallest p that B draws can resolve (as before)."""
    if np.ndim(rep.point):
        raise ValueError("bootstrap_p takes one scalar quantity")
    z0, a = (float(v) for v in _corrections(rep, method))
    floor = 2 / (rep.n_boot + 1)
    q = share_below(rep.draws, 2 * float(rep.point) - null if method == "basic" else null)
    w = float(_ppf(q)) - z0
    if not np.isfinite(w) or 1 + a * w <= 0:
        return floor  # `null` lies beyond every draw, or beyond every endpoint the formula can reach
    tail = _NORMAL.cdf(w / (1 + a * w) - z0)  # the endpoint formula solved for z at share q
    return float(min(1.0, max(2 * min(tail, 1 - tail), floor)))
