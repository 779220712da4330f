"""How the linear probe should choose its penalty: a study on SynthCell, not a speed benchmark.

For each backbone x split (the demo's four backbones on `dataset=synthcell`, split seeds 0-7 by
default), the probe's arithmetic (`heads.logistic`) fits a wide path of penalties (1 to 1e-7, two
per decade, warm-started, to convergence) and scores every fit on validation (macro F1, log-loss)
and on test (macro F1). Each selection rule then picks a penalty from the default path
(0.1 to 1e-6) by validation alone, and the study reports the test macro F1 of its pick against
the probe's rule (the best validation macro F1, the path stopped after `head.patience`
penalties without a gain):

- `whole_path`: the same without stopping early (every penalty of the path fitted);
- `smooth1`, `smooth2`: validation macro F1 averaged with 1 / 2 neighbours each side of the path;
- `val_loss`: the lowest validation log-loss;
- `oracle`: the best test macro F1 (not a rule: the most any rule could get).

    python -m xferlab.benchmarks.probe_selection --record docs/bench/probe-selection.json --table docs/results/probe_selection.md
    python -m xferlab.benchmarks.probe_selection --from docs/bench/probe-selection.json --table docs/results/probe_selection.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from xferlab.benchmarks.heads import BACKBONES, DATASET, compose

SPLITS = tuple(range(8))
WIDE = {"start": 1.0, "stop": 1e-7, "per_decade": 2}
DEFAULT = (0.1, 1e-6)  # the default path's ends (conf/head/linear.yaml)
RULES = ("probe", "whole_path", "smooth1", "smooth2", "val_loss", "oracle")


def fit_path(backbone: str, split_seed: int, base: Sequence[str] = (DATASET,)) -> dict[str, Any]:
    """Every penalty of `WIDE` on one unit: validation F1 and log-loss, test F1, iterations."""
    import torch

    from xferlab import metrics
    from xferlab.data.splits import TEST, TRAIN, VAL
    from xferlab.heads.logistic import Preconditioner, Rows, minimise, scores, standardisation
    from xferlab.heads.probe import _log_loss, penalty_path
    from xferlab.job import check_config, load_inputs

    cfg = compose([*base, f"backbone={backbone}", f"split_seed={split_seed}", "head=linear"])
    inputs = load_inputs(cfg, check_config(cfg))
    x, y, split = np.asarray(inputs.features), np.asarray(inputs.labels), np.asarray(inputs.split)
    train, val, test = (np.nonzero(split == part)[0] for part in (TRAIN, VAL, TEST))
    average_over = str(cfg.metrics.average_over)

    def f1(rows: np.ndarray, probs: np.ndarray) -> float:
        return float(metrics.macro_f1(metrics.counts(y[rows], probs, multilabel=False, average_over=average_over)))

    mean, std = standardisation(x, train)
    k = len(inputs.store.classes)
    rows = Rows(x[train], y[train], None, mean, std, torch.device("cpu"), torch.float64, 65536, True, k)
    pre = Preconditioner(rows)
    theta = torch.zeros(k, x.shape[1] + 1, dtype=torch.float64)
    points = []
    for l2 in penalty_path(WIDE):
        fit = minimise(theta, rows, l2, False, pre, tol=float(cfg.head.tol), rtol=float(cfg.head.rtol), max_iter=3000)
        theta = fit.theta
        p_val, p_test = scores(theta, x[val], mean, std, False), scores(theta, x[test], mean, std, False)
        points.append({"l2": float(l2), "iterations": fit.iterations, "converged": bool(fit.converged),
                       "val_macro_f1": f1(val, p_val), "val_loss": _log_loss(y[val], p_val, False),
                       "test_macro_f1": f1(test, p_test)})
    return {"backbone": backbone, "split_seed": split_seed, "patience": int(cfg.head.patience), "n_train": len(train), "n_val": len(val),
            "n_test": len(test), "path": points}


def pick(points: list[dict[str, Any]], rule: str, patience: int) -> int:
    """The index (into `points`, the default path's part of the wide path) that `rule` chooses."""
    from xferlab.heads.probe import smoothed_f1

    val = np.array([p["val_macro_f1"] for p in points])
    loss = np.array([p["val_loss"] for p in points])
    if rule == "oracle":
        return int(np.argmax([p["test_macro_f1"] for p in points]))
    if rule == "val_loss":
        return int(np.argmin(loss))
    fitted, best = len(points), 0  # the path as the probe walks it: stop after `patience` without a gain
    for i in range(len(points) if rule != "whole_path" else 0):
        if val[i] > val[best]:
            best = i
        if i - best >= patience:
            fitted = i + 1
            break
    neighbours = int(rule.removeprefix("smooth")) if rule.startswith("smooth") else 0
    smoothed = np.array(smoothed_f1(val[:fitted], neighbours))
    return int(max(range(fitted), key=lambda i: (smoothed[i], -loss[i])))


def study(backbones: Sequence[str] = BACKBONES, splits: Sequence[int] = SPLITS,
          base: Sequence[str] = (DATASET,)) -> list[dict[str, Any]]:
    """One row per unit: each rule's pick and test macro F1."""
    rows = []
    for backbone in backbones:
        for split_seed in splits:
            unit = fit_path(backbone, split_seed, base)
            points = [p for p in unit["path"] if DEFAULT[1] * 0.999 <= p["l2"] <= DEFAULT[0] * 1.001]
            chosen = {rule: pick(points, rule, unit["patience"]) for rule in RULES}
            rows.append({**unit, **{f"{rule}_l2": points[i]["l2"] for rule, i in chosen.items()},
                         **{f"{rule}_test_macro_f1": points[i]["test_macro_f1"] for rule, i in chosen.items()}})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """Each rule's test macro F1 against the probe's, over all units and by split seed group."""
    base = np.array([r["probe_test_macro_f1"] for r in rows])
    lines = ["| rule | test macro F1, mean | mean difference to the probe's rule | lowest | highest |",
             "|---|---|---|---|---|"]
    for rule in RULES:
        values = np.array([r[f"{rule}_test_macro_f1"] for r in rows])
        diff = values - base
        lines.append(f"| {rule} | {values.mean():.4f} | {diff.mean():+.4f} | {diff.min():+.4f} | {diff.max():+.4f} |")
    splits = sorted({r["split_seed"] for r in rows})
    backbones = list(dict.fromkeys(r["backbone"] for r in rows))
    lines += ["", f"{len(rows)} units: {', '.join(backbones)} x split seeds {splits[0]}-{splits[-1]} on SynthCell "
              f"({rows[0]['n_train']} / {rows[0]['n_val']} / {rows[0]['n_test']} train / val / test crops); "
              f"`probe`: the best validation macro F1, the path stopped after {rows[0]['patience']} penalties without "
              "a gain (the default), `whole_path`: the same over the whole path, `smoothN`: averaged with N neighbours each side, "
              "`val_loss`: the lowest validation log-loss, `oracle`: the best test macro F1."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xferlab.benchmarks.probe_selection",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--record", type=Path, help="write every unit's path and picks here (JSON)")
    parser.add_argument("--from", dest="source", type=Path, help="render the table of a saved record instead")
    parser.add_argument("--table", type=Path, help="write the markdown table here")
    args = parser.parse_args(argv)
    from xferlab.benchmarks.common import publish

    if args.source:
        publish(json.loads(args.source.read_text())["results"], table, table_path=args.table)
        return 0
    import torch

    torch.set_num_threads(1)
    publish(study(), table, args.record, args.table)
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
