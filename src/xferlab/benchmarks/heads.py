"""Head training against scikit-learn: the time to fit, choose and test a head grid the way a job
does it (`xferlab.heads.training.train_head`, a Lightning Trainer, CSV logger) against
`LogisticRegression()` (lbfgs, default settings) fitted on standardised training embeddings; both
scored by macro F1 on the same test split.

The embeddings come through the job's own path (`load_inputs`: store, backbone, split, embedding
cache); by default the demo's data, `dataset=synthcell backbone=synth_opencell`, under the usual
`outputs/` (built and extracted once, then cached). One warm-up round, then `repeats` rounds
that run every side in turn; the medians are compared. The main rows take each side as configured
(xferlab: `head.threads`, one by default; scikit-learn: its default BLAS / OpenMP threads, which
can be far slower than one on a busy machine); the `_1thread` rows pin scikit-learn to one
thread as well.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np

DEMO = ("dataset=synthcell", "backbone=synth_opencell")


def compose(overrides: Sequence[str]):
    """The `train` config with these overrides (as `python -m xferlab.train` would compose it)."""
    from xferlab.benchmarks.common import compose_config

    return compose_config(["paths.output_dir=outputs/bench/heads", *overrides])


@contextmanager
def one_thread(enabled: bool) -> Iterator[None]:
    """The BLAS / OpenMP pools (scikit-learn's) pinned to one thread for the block."""
    if not enabled:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def fit_sklearn(features: np.ndarray, labels: np.ndarray, split: np.ndarray) -> tuple[float, float]:
    """Seconds to standardise and fit `LogisticRegression()` on the training rows, and its test
    macro F1."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import StandardScaler

    from xferlab.data.splits import TEST, TRAIN

    train, test = split == TRAIN, split == TEST
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # lbfgs stops at its default 100 iterations
        scaler = StandardScaler().fit(features[train])
        model = LogisticRegression().fit(scaler.transform(features[train]), labels[train])
    seconds = time.perf_counter() - start
    pred = model.predict(scaler.transform(features[test]))
    return seconds, float(f1_score(labels[test], pred, average="macro"))


def fit_xferlab(cfg, inputs) -> tuple[float, dict[str, Any]]:
    """Seconds for `train_head` (data module, grid, Trainer, fit, choice, test), and its fit."""
    from lightning.pytorch.loggers import CSVLogger

    from xferlab import metrics
    from xferlab.heads.training import train_head

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        fit = train_head(cfg.head, inputs.features, inputs.labels, inputs.split, inputs.store.classes,
                         multilabel=inputs.multilabel, seed=int(cfg.seed), make_trainer=inputs.make_trainer,
                         logger=[CSVLogger(tmp, name="csv", version="")], root_dir=tmp)
        seconds = time.perf_counter() - start
    scored = metrics.score(inputs.labels[fit.rows], fit.scores, classes=inputs.store.classes,
                           multilabel=inputs.multilabel)
    return seconds, {"metrics": {**scored, **fit.selection}, "epochs": fit.info["epochs"]}


def bench_head_vs_sklearn(overrides: Sequence[str] = DEMO, heads: Sequence[str] = ("linear", "mlp"),
                          repeats: int = 3) -> list[dict[str, Any]]:
    """Rows per head: `heads/<head>_fit_time_ratio` (xferlab seconds / sklearn seconds, each with
    its default settings; the linear head's target is <= 1), `heads/<head>_macro_f1_diff`
    (xferlab - sklearn test macro F1; target >= -0.01) and `heads/<head>_fit_time_ratio_1thread`
    (the same with scikit-learn on one thread too; no target)."""
    from xferlab.data.splits import TEST, TRAIN, VAL
    from xferlab.job import check_config, load_inputs

    configs = {head: compose(["logger=csv", *overrides, f"head={head}"]) for head in heads}
    first = next(iter(configs.values()))
    if float(first.label_fraction) != 1.0:
        raise ValueError("the head benchmark needs every training label")
    inputs = load_inputs(first, check_config(first))
    if inputs.multilabel:
        raise ValueError("the head benchmark compares single-label classifiers; pick a single-label dataset")
    x, y, split = inputs.features, inputs.labels, inputs.split

    # one warm-up round, then `repeats` rounds, each side by side: sklearn (default threads, one
    # thread), then every head
    ours: dict[str, list[tuple[float, dict]]] = {head: [] for head in heads}
    theirs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for round_ in range(1 + max(1, int(repeats))):
        for pinned in (False, True):
            with one_thread(pinned):
                measured = fit_sklearn(x, y, split)
            if round_:
                theirs[pinned].append(measured)
        for head, cfg in configs.items():
            measured = fit_xferlab(cfg, inputs)
            if round_:
                ours[head].append(measured)

    detail = {"dataset": first.dataset.name, "backbone": inputs.backbone.name, "dims": int(x.shape[1]),
              "classes": len(inputs.store.classes), "n_train": int((split == TRAIN).sum()),
              "n_val": int((split == VAL).sum()), "n_test": int((split == TEST).sum()), "repeats": len(theirs[False])}
    rows = []
    for head, cfg in configs.items():
        seconds = statistics.median(s for s, _ in ours[head])
        fit = ours[head][-1][1]
        scores = fit["metrics"]
        f1 = scores["test/macro_f1"]
        common = {**detail, "head": head, "xferlab_seconds": round(seconds, 3), "xferlab_threads": cfg.head.get("threads"),
                  "xferlab_macro_f1": round(f1, 4), "grid_size": scores["head/grid_size"],
                  "chosen_lr": scores["head/lr"], "chosen_weight_decay": scores["head/weight_decay"],
                  "best_epoch": scores["head/best_epoch"], "epochs": fit["epochs"]}
        for pinned in (False, True):
            sk_seconds = statistics.median(s for s, _ in theirs[pinned])
            sk_f1 = theirs[pinned][-1][1]
            ratio = seconds / sk_seconds
            side = {**common, "sklearn_seconds": round(sk_seconds, 3), "sklearn_threads": 1 if pinned else "default",
                    "sklearn_macro_f1": round(sk_f1, 4)}
            if pinned:
                rows.append({"benchmark": f"heads/{head}_fit_time_ratio_1thread", "value": round(ratio, 3),
                             "unit": "x sklearn", **side})
                continue
            time_row = {"benchmark": f"heads/{head}_fit_time_ratio", "value": round(ratio, 3), "unit": "x sklearn", **side}
            if head == "linear":
                time_row.update(target=1.0, meets_target=ratio <= 1.0)
            diff = f1 - sk_f1
            rows += [time_row, {"benchmark": f"heads/{head}_macro_f1_diff", "value": round(diff, 4), "unit": "F1",
                                "target": -0.01, "meets_target": diff >= -0.01, **side}]
    return rows
