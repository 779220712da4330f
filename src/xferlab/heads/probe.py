"""`head=linear`: the linear probe, the study's measuring stick.

A regularised multinomial logistic regression on standardised embeddings (multilabel: one
logistic regression per class, binary cross-entropy on the soft or graded targets), fitted to
convergence by L-BFGS (`heads.logistic`) along a path of penalties from strong to weak, each fit
warm-started from the previous one. Every penalty on the path is scored on the validation split
by macro F1 (as on test: `metrics.average_over`), and the penalty with the highest validation F1
is chosen (ties: the lower validation log-loss); only it scores the test rows, once. The path
stops early once `patience` penalties in a row have not beaten the best validation F1 (the
weakest fits are the slowest, and validation F1 falls as the penalty weakens past its optimum).
`smooth=n` chooses on validation F1 averaged with `n` neighbours on each side of the path
instead (the end values repeated). The default, the plain argmax, is what the study
`xferlab.benchmarks.probe_selection` (docs/results/probe_selection.md) supports: averaging did
not change test macro F1 beyond noise, and choosing by validation log-loss, a smoother
criterion, costs macro F1 (it prefers stronger penalties than F1 does).

The fit is deterministic (a strictly convex objective from zero weights): the run seed does not
change it. It runs where the trainer runs (`trainer=gpu`: on the GPU), in float64 by default.
Rows are evaluated in chunks of `chunk_rows`; when the training rows take more than
`resident_bytes`, they stay on the host and are moved chunk by chunk for every evaluation, so
memory stays bounded for any number of embeddings with the same objective and the same result.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Sequence

import numpy as np
import torch

from xferlab import metrics
from xferlab.data.splits import TEST, TRAIN, VAL
from xferlab.backbones.weights import state_dict_sha256
from xferlab.heads.base import EMBEDDINGS, HeadData, HeadResult, check_class_weights, class_weights
from xferlab.heads.logistic import Preconditioner, Rows, minimise, scores, standardisation
from xferlab.heads.modules import LinearHead
from xferlab.runtime import faults

log = logging.getLogger(__name__)

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def penalty_path(l2: Any, key: str = "head.l2") -> list[float]:
    """The penalties to fit, strongest first: a list of values, one value, or
    `{start, stop, per_decade}` (geometric, both ends included); `key` names the setting in errors."""
    if isinstance(l2, (int, float)):
        values = [float(l2)]
    elif hasattr(l2, "keys"):
        missing = {"start", "stop", "per_decade"} - set(l2.keys())
        if missing:
            raise ValueError(f"{key}={dict(l2)}: a path needs start, stop and per_decade (missing {sorted(missing)})")
        start, stop, per = float(l2["start"]), float(l2["stop"]), int(l2["per_decade"])
        if not (start > 0 and stop > 0 and per > 0):
            raise ValueError(f"{key}={dict(l2)}: start and stop must be > 0 and per_decade >= 1")
        steps = int(round(abs(math.log10(start / stop)) * per))
        values = list(np.geomspace(start, stop, steps + 1)) if steps else [start]
    else:
        values = [float(v) for v in l2]
    if not values or any(not v > 0 for v in values):
        raise ValueError(f"{key}={l2!r}: give penalties > 0 (a value, a list, or {{start, stop, per_decade}})")
    if len(set(values)) != len(values):
        raise ValueError(f"{key}={l2!r} lists a penalty twice")
    return sorted((float(v) for v in values), reverse=True)


def smoothed_f1(values: Sequence[float], neighbours: int) -> list[float]:
    """Each value averaged with up to `neighbours` values on either side, the end values repeated
    past the ends (so every average has `2 * neighbours + 1` terms)."""
    v = np.asarray(values, dtype=np.float64)
    if neighbours == 0 or len(v) == 0:
        return v.tolist()
    padded = np.pad(v, neighbours, mode="edge")
    return np.convolve(padded, np.full(2 * neighbours + 1, 1 / (2 * neighbours + 1)), mode="valid").tolist()


def probe_device(device: str) -> torch.device:
    """`cpu`, or `gpu` / `cuda` (the trainer's accelerator names): a CUDA device, or an error."""
    name = str(device).lower()
    if name == "cpu":
        return torch.device("cpu")
    if name in ("gpu", "cuda") or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"head.device={device!r} but no CUDA device is visible; use trainer=cpu "
                               "(the probe follows the trainer) or head.device=cpu")
        return torch.device("cuda" if name == "gpu" else name)
    raise ValueError(f"head.device={device!r}; choose cpu or cuda (by default it follows trainer.accelerator)")


def _macro_f1(labels: np.ndarray, probs: np.ndarray, multilabel: bool, average_over: str) -> float:
    return float(metrics.macro_f1(metrics.counts(labels, probs, multilabel=multilabel, average_over=average_over)))


def _log_loss(labels: np.ndarray, probs: np.ndarray, multilabel: bool) -> float:
    p = np.clip(probs.astype(np.float64), 1e-12, 1 - 1e-12)
    if multilabel:
        return float(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)).sum(axis=1).mean())
    return float(-np.log(p[np.arange(len(labels)), labels]).mean())


class LinearProbe:
    """The linear probe (see the module docstring); `head=linear`."""

    inputs = EMBEDDINGS

    def __init__(self, name: str = "linear", l2: Any = None, path: Any = None, patience: int | None = 2, smooth: int = 0,
                 tol: float = 1e-4,
                 rtol: float = 0.01, max_iter: int = 1000, class_weights: str = "none", device: str = "cpu",
                 dtype: str = "float64", chunk_rows: int = 65536, resident_bytes: float = 2 ** 31,
                 threads: int | None = 1):
        self.name = name
        # explicit penalties (`head.l2`: a value or a list) replace the geometric path (`head.path`)
        if l2 is not None:
            self.path = penalty_path(l2, "head.l2")
        else:
            self.path = penalty_path({"start": 0.1, "stop": 1e-6, "per_decade": 2} if path is None else path, "head.path")
        if int(smooth) < 0:
            raise ValueError(f"head.smooth={smooth}: choose 0 (no averaging) or more neighbours")
        self.smooth = int(smooth)
        if patience is not None and int(patience) < 1:
            raise ValueError(f"head.patience={patience}: choose a number >= 1, or null to fit the whole path")
        if dtype not in DTYPES:
            raise ValueError(f"head.dtype={dtype!r}; choose one of {sorted(DTYPES)}")
        if not (tol > 0 and rtol > 0 and int(max_iter) > 0 and int(chunk_rows) > 0):
            raise ValueError("head.tol, head.rtol, head.max_iter and head.chunk_rows must be > 0")
        self.patience = None if patience is None else int(patience)
        self.tol, self.rtol, self.max_iter = float(tol), float(rtol), int(max_iter)
        self.class_weights = check_class_weights(class_weights)
        self.device_name, self.dtype = str(device), DTYPES[dtype]
        self.chunk_rows, self.resident_bytes = int(chunk_rows), float(resident_bytes)
        self.threads = threads

    def check(self, *, multilabel: bool, multi_view: bool) -> None:
        """Every label rule and channel strategy works with the probe."""

    def fit(self, data: HeadData) -> HeadResult:
        before = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(int(self.threads))
        try:
            return self._fit(data)
        finally:
            torch.set_num_threads(before)

    def _fit(self, data: HeadData) -> HeadResult:
        started = time.perf_counter()
        device = probe_device(self.device_name)
        x, labels, split, k = data.features, np.asarray(data.labels), np.asarray(data.split), len(data.classes)
        train, val, test = (np.nonzero(split == part)[0] for part in (TRAIN, VAL, TEST))
        for name, rows in (("train", train), ("val", val), ("test", test)):
            if not len(rows):
                raise ValueError(f"the {name} split is empty; the dataset is too small for the split fractions")
        mean, std = standardisation(x, train, self.chunk_rows)
        weights = class_weights(labels[train], k, self.class_weights)
        sample_weight = pos_weight = None
        if weights is not None and data.multilabel:
            pos_weight = weights.to(device=device, dtype=self.dtype)
        elif weights is not None:
            sample_weight = weights.numpy().astype(np.float64)[labels[train]]
        resident = len(train) * x.shape[1] * torch.tensor([], dtype=self.dtype).element_size() <= self.resident_bytes
        rows = Rows(x=_Take(x, train), y=labels[train], weight=sample_weight, mean=mean, std=std, device=device,
                    dtype=self.dtype, chunk_rows=self.chunk_rows, resident=resident, k=k)
        x_val = x[val]

        theta = torch.zeros(k, x.shape[1] + 1, dtype=self.dtype, device=device)
        pre = Preconditioner(rows)
        path: list[dict[str, Any]] = []
        best: dict[str, Any] | None = None  # the best raw validation F1, for stopping
        for step, l2 in enumerate(self.path):
            fitted = minimise(theta, rows, l2, data.multilabel, pre,
                              pos_weight=pos_weight, tol=self.tol, rtol=self.rtol, max_iter=self.max_iter)
            theta = fitted.theta
            probs = scores(theta, x_val, mean, std, data.multilabel, self.chunk_rows)
            point = {"l2": l2, "theta": theta, "iterations": fitted.iterations, "converged": fitted.converged,
                     "grad_max": fitted.grad_max, "train_loss": fitted.loss,
                     "val_macro_f1": _macro_f1(labels[val], probs, data.multilabel, data.average_over),
                     "val_loss": _log_loss(labels[val], probs, data.multilabel), "val_scores": probs}
            path.append(point)
            if not fitted.converged:  # in train.log; a warning on the console only if it is the penalty chosen
                log.info("linear probe: l2=%.3g stopped after %d iterations with gradient %.2e (not converged; "
                         "raise head.max_iter)", l2, fitted.iterations, fitted.grad_max)
            if best is None or point["val_macro_f1"] > best["val_macro_f1"]:
                best = point
            self._log(data, step, point)
            faults.stall_point("head.path_step", str(data.run_dir or ""))
            if self.patience is not None and len(path) - 1 - path.index(best) >= self.patience:
                break
        smoothed = smoothed_f1([p["val_macro_f1"] for p in path], self.smooth)
        for point, value in zip(path, smoothed):
            point["val_macro_f1_smoothed"] = value
        best = max(path, key=lambda p: (p["val_macro_f1_smoothed"], -p["val_loss"]))
        fit_seconds = time.perf_counter() - started
        test_scores = scores(best["theta"], x[test], mean, std, data.multilabel, self.chunk_rows)
        chosen = path.index(best)
        at_edge = chosen == 0 or (chosen == len(path) - 1 and len(path) == len(self.path))
        if not best["converged"]:
            log.warning("linear probe: the chosen penalty l2=%.3g stopped after %d iterations with gradient %.2e "
                        "(not converged; raise head.max_iter)", best["l2"], best["iterations"], best["grad_max"])
        if at_edge and len(self.path) > 1:
            log.warning("linear probe: the chosen penalty l2=%.3g is at the end of the path %s; the optimum may lie "
                        "beyond it (widen head.path)", best["l2"], [f"{v:.3g}" for v in self.path])
        selection = {
            "val/macro_f1": best["val_macro_f1"], "val/macro_f1_smoothed": best["val_macro_f1_smoothed"],
            "val/loss": best["val_loss"],
            "head/l2": best["l2"], "head/C": 1.0 / (best["l2"] * len(train)),
            "head/path_fitted": len(path), "head/path_size": len(self.path), "head/at_edge": bool(at_edge),
            "head/iterations": int(sum(p["iterations"] for p in path)),
            "head/converged": bool(all(p["converged"] for p in path)),
            **{f"probe/l2={p['l2']:.3g}/val/macro_f1": p["val_macro_f1"] for p in path},
        }
        module = self._module(best["theta"], mean, std)
        info = {"fit_seconds": fit_seconds, "head_sha256_after": state_dict_sha256(module), "head_seconds": time.perf_counter() - started, "device": str(device),
                "resident": resident, "path": [{k_: v for k_, v in p.items() if k_ not in ("theta", "val_scores")}
                                               for p in path]}
        return HeadResult(rows=test, scores=test_scores, selection=selection, info=info,
                          module=module, val_rows=val, val_scores=best["val_scores"])

    @staticmethod
    def _module(theta: torch.Tensor, mean: np.ndarray, std: np.ndarray) -> LinearHead:
        """The chosen probe as a standalone head of raw embeddings (standardisation included)."""
        k, d = theta.shape[0], theta.shape[1] - 1
        head = LinearHead(d, k, norm="standardize")
        with torch.no_grad():
            head.norm.mean.copy_(torch.as_tensor(mean))
            head.norm.std.copy_(torch.as_tensor(std))
            head.fc.weight.copy_(theta[:, :-1].float().cpu())
            head.fc.bias.copy_(theta[:, -1].float().cpu())
        return head

    @staticmethod
    def _log(data: HeadData, step: int, point: dict[str, Any]) -> None:
        row = {"probe/l2": point["l2"], "train/loss": point["train_loss"], "val/macro_f1": point["val_macro_f1"],
               "val/loss": point["val_loss"], "probe/iterations": point["iterations"]}
        for logger in data.loggers or []:
            logger.log_metrics(row, step=step)


class _Take:
    """Rows `index` of `x`, sliceable without copying the whole selection (a memory map or a
    zarr array is read chunk by chunk)."""

    def __init__(self, x: Any, index: np.ndarray):
        self.x, self.index = x, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, part: slice) -> np.ndarray:
        return np.asarray(self.x[self.index[part]])
