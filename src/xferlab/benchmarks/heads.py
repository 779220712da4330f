"""The linear probe (`head=linear`) against scikit-learn's `LogisticRegression` with C tuned on
validation, on the same cached embeddings and the same rows.

For each backbone x split (by default the demo's four backbones on `dataset=synthcell`, split
seeds 0-2), the embeddings come through the job's own path (`load_inputs`: store, backbone, split,
embedding cache). Both sides standardise with the training rows' statistics and fit the same
objective; scikit-learn fits every C of the probe's whole path (`C = 1 / (l2 * n_train)`, the same
grid and size), each from scratch with `max_iter=1000`, picks the C with the best validation
macro F1 (the first on ties) and scores test once. The probe runs as a job runs it (path, warm
starts, early stop, choice on validation). Times cover standardisation, every fit, the validation
scoring, the choice and the test scores. Each side runs on one thread and with its library's
default threads, interleaved unit by unit so machine load hits both alike. A third side, not timed:
scikit-learn's Newton-CG solver at `tol=1e-10`, a second-order method that reaches the optimum of
these ill-conditioned problems (weak penalties, correlated embeddings) where L-BFGS stops early on
its objective test: with its defaults (`tol=1e-4`, `max_iter=1000`) on synth_photos split 0 at
C = 2.9, L-BFGS stops after 495 iterations at test macro F1 0.5603, at tol 1e-6 after 722 at the
optimum's 0.5562; on synth_opencell split 1 at C = 9.17 even tol 1e-8 leaves 3 of 750 test crops
predicted differently from the optimum (the probe run to float64 precision), Newton-CG none. It shows how
far the probe is from the tuned optimum itself, also as the share of test crops predicted alike.

    python -m xferlab.bench heads                       # in `make bench`: rows in outputs/bench/<time>.json
    python -m xferlab.benchmarks.heads --record docs/bench/heads.json --table docs/results/linear_probe.md
    python -m xferlab.benchmarks.heads --from docs/bench/heads.json --table docs/results/linear_probe.md
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

BACKBONES = ("synth_opencell", "synth_hpa", "synth_photos", "random")
SPLITS = (0, 1, 2)
DATASET = "dataset=synthcell"
CONVERGED_SOLVER, CONVERGED_TOL, CONVERGED_MAX_ITER = "newton-cg", 1e-10, 10_000


def compose(overrides: Sequence[str]):
    """The `train` config with these overrides (as `python -m xferlab.train` would compose it)."""
    from xferlab.benchmarks.common import compose_config

    return compose_config(["paths.output_dir=outputs/bench/heads", "logger=csv", *overrides])


@contextmanager
def threads(one: bool) -> Iterator[None]:
    """torch and the BLAS / OpenMP pools pinned to one thread for the block (or left as they are)."""
    import torch
    from threadpoolctl import threadpool_limits

    if not one:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(before)


def _val_f1(labels: np.ndarray, probs: np.ndarray, average_over: str) -> float:
    from xferlab import metrics

    return float(metrics.macro_f1(metrics.counts(labels, probs, multilabel=False, average_over=average_over)))


def fit_sklearn(x: np.ndarray, y: np.ndarray, split: np.ndarray, cs: Sequence[float],
                average_over: str, max_iter: int = 1000, tol: float = 1e-4, solver: str = "lbfgs") -> dict[str, Any]:
    """Standardise, fit `LogisticRegression(C=c, max_iter=max_iter, tol=tol, solver=solver)` for every C, choose on
    validation macro F1, score test: the seconds, the chosen C and the test scores."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from xferlab.data.splits import TEST, TRAIN, VAL

    train, val, test = (split == part for part in (TRAIN, VAL, TEST))
    start = time.perf_counter()
    scaler = StandardScaler().fit(x[train])
    xt, xv = scaler.transform(x[train]), scaler.transform(x[val])
    fits, unconverged = [], 0
    for c in cs:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model = LogisticRegression(C=c, max_iter=max_iter, tol=tol, solver=solver).fit(xt, y[train])
        unconverged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
        fits.append((_val_f1(y[val], model.predict_proba(xv), average_over), model))
    chosen = max(range(len(cs)), key=lambda i: (fits[i][0], -i))  # the first best
    test_scores = fits[chosen][1].predict_proba(scaler.transform(x[test]))
    return {"seconds": time.perf_counter() - start, "scores": test_scores, "C": float(cs[chosen]),
            "chosen_index": chosen, "val_macro_f1": fits[chosen][0], "unconverged": unconverged}


def fit_probe(cfg, inputs, threads: int | None) -> dict[str, Any]:
    """The job's head (`cfg.head`, `head=linear`) with `head.threads` set to `threads`."""
    from hydra.utils import instantiate

    from xferlab.heads.base import HeadData

    head = instantiate(cfg.head, threads=threads)
    data = HeadData(features=inputs.features, labels=inputs.labels, split=inputs.split, classes=inputs.store.classes,
                    multilabel=False, seed=int(cfg.seed), average_over=str(cfg.metrics.average_over),
                    make_trainer=inputs.make_trainer)
    start = time.perf_counter()
    fit = head.fit(data)
    seconds = time.perf_counter() - start
    s = fit.selection
    return {"seconds": seconds, "scores": fit.scores, "C": s["head/C"], "l2": s["head/l2"],
            "val_macro_f1": s["val/macro_f1"], "at_edge": s["head/at_edge"], "fitted": s["head/path_fitted"],
            "path_size": s["head/path_size"], "converged": s["head/converged"], "path": head.path}


def bench_unit(backbone: str, split_seed: int, repeats: int = 1, base: Sequence[str] = (DATASET,)) -> dict[str, Any]:
    """One backbone x split: both sides on one thread and with default threads (the medians of
    `repeats` interleaved rounds), test macro F1 of each."""
    from xferlab import metrics
    from xferlab.data.splits import TEST, TRAIN, VAL
    from xferlab.job import check_config, load_inputs

    cfg = compose([*base, f"backbone={backbone}", f"split_seed={split_seed}", "head=linear"])
    if float(cfg.label_fraction) != 1.0:
        raise ValueError("the head benchmark needs every training label")
    inputs = load_inputs(cfg, check_config(cfg))
    if inputs.multilabel:
        raise ValueError("the head benchmark compares single-label classifiers; pick a single-label dataset")
    x, y, split = np.asarray(inputs.features), np.asarray(inputs.labels), np.asarray(inputs.split)
    n_train = int((split == TRAIN).sum())
    average_over = str(cfg.metrics.average_over)
    seconds: dict[str, list[float]] = {k: [] for k in ("probe_1", "probe_default", "sklearn_1", "sklearn_default")}
    for _ in range(max(1, int(repeats))):
        for one in (True, False):
            tag = "1" if one else "default"
            with threads(one):
                probe = fit_probe(cfg, inputs, 1 if one else None)
                cs = [1.0 / (l2 * n_train) for l2 in probe["path"]]
                sk = fit_sklearn(x, y, split, cs, average_over)
            seconds[f"probe_{tag}"].append(probe["seconds"])
            seconds[f"sklearn_{tag}"].append(sk["seconds"])
    with threads(True):  # the reference at its optimum: every fit converged (not timed)
        converged = fit_sklearn(x, y, split, cs, average_over, max_iter=CONVERGED_MAX_ITER, tol=CONVERGED_TOL,
                                solver=CONVERGED_SOLVER)

    def test_f1(scores: np.ndarray) -> float:
        return float(metrics.score(y[split == TEST], scores, classes=inputs.store.classes,
                                   multilabel=False, average_over=average_over)["test/macro_f1"])

    ours, theirs, optimum = test_f1(probe["scores"]), test_f1(sk["scores"]), test_f1(converged["scores"])
    return {
        "backbone": backbone, "split_seed": split_seed, "dataset": cfg.dataset.name, "dims": int(x.shape[1]),
        "classes": len(inputs.store.classes), "n_train": n_train, "n_val": int((split == VAL).sum()),
        "n_test": int((split == TEST).sum()), "repeats": max(1, int(repeats)),
        "probe_macro_f1": round(ours, 4), "sklearn_macro_f1": round(theirs, 4), "macro_f1_diff": round(ours - theirs, 4),
        "probe_C": probe["C"], "sklearn_C": sk["C"], "C_grid": [float(c) for c in cs],
        "probe_at_edge": bool(probe["at_edge"]), "sklearn_at_edge": sk["chosen_index"] in (0, len(cs) - 1),
        "probe_path_fitted": probe["fitted"], "probe_converged": bool(probe["converged"]),
        "sklearn_unconverged_fits": sk["unconverged"],
        "sklearn_converged_macro_f1": round(optimum, 4), "sklearn_converged_C": converged["C"],
        "sklearn_converged_unconverged_fits": converged["unconverged"],
        "macro_f1_diff_to_converged": round(ours - optimum, 4),
        "same_prediction_as_converged": round(float((probe["scores"].argmax(1) == converged["scores"].argmax(1)).mean()), 4),
        **{f"{k}_seconds": round(float(np.median(v)), 3) for k, v in seconds.items()},
    }


def bench_head_vs_sklearn(backbones: Sequence[str] = BACKBONES, splits: Sequence[int] = SPLITS,
                          repeats: int = 1, base: Sequence[str] = (DATASET,)) -> list[dict[str, Any]]:
    """One row per unit (`heads/unit/<backbone>/split<s>`: the test macro F1 difference, probe -
    scikit-learn) and the summary rows: `heads/linear_macro_f1_diff_mean` (target >= 0),
    `heads/linear_macro_f1_diff_min` (target >= -0.01), `heads/linear_time_ratio_1thread`
    (probe seconds / scikit-learn seconds summed over the units, both on one thread; target <= 1)
    and `heads/linear_time_ratio_default` (each library's default threads; no target)."""
    units = [bench_unit(b, s, repeats, base) for b in backbones for s in splits]
    rows = [{"benchmark": f"heads/unit/{u['backbone']}/split{u['split_seed']}", "value": u["macro_f1_diff"],
             "unit": "F1", **u} for u in units]
    diffs = np.array([u["macro_f1_diff"] for u in units])
    common = {"units": len(units), "backbones": list(backbones), "split_seeds": list(splits),
              "probe_at_edge": sum(u["probe_at_edge"] for u in units),
              "sklearn_at_edge": sum(u["sklearn_at_edge"] for u in units)}
    rows.append({"benchmark": "heads/linear_macro_f1_diff_mean", "value": round(float(diffs.mean()), 4), "unit": "F1",
                 "target": 0.0, "meets_target": bool(diffs.mean() >= 0), **common})
    rows.append({"benchmark": "heads/linear_macro_f1_diff_min", "value": round(float(diffs.min()), 4), "unit": "F1",
                 "target": -0.01, "meets_target": bool(diffs.min() >= -0.01), **common})
    for tag in ("1", "default"):
        ours = sum(u[f"probe_{tag}_seconds"] for u in units)
        theirs = sum(u[f"sklearn_{tag}_seconds"] for u in units)
        row = {"benchmark": f"heads/linear_time_ratio_{'1thread' if tag == '1' else 'default'}",
               "value": round(ours / theirs, 3), "unit": "x sklearn", "probe_seconds": round(ours, 3),
               "sklearn_seconds": round(theirs, 3), **common}
        if tag == "1":
            row.update(target=1.0, meets_target=bool(ours <= theirs))
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The benchmark's rows as the markdown table the README quotes."""
    units = [r for r in rows if r["benchmark"].startswith("heads/unit/")]
    summary = {r["benchmark"]: r for r in rows if not r["benchmark"].startswith("heads/unit/")}
    lines = ["| backbone | split | probe F1 | sklearn F1 | diff | probe C | sklearn C (fits stopped at max_iter) | "
             "optimum (sklearn newton-cg): F1, C, same predictions | probe s (1 thread / default) | sklearn s (1 thread / default) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for u in units:
        lines.append(f"| {u['backbone']} | {u['split_seed']} | {u['probe_macro_f1']:.4f} | {u['sklearn_macro_f1']:.4f} | "
                     f"{u['macro_f1_diff']:+.4f} | {u['probe_C']:.3g} | {u['sklearn_C']:.3g} ({u['sklearn_unconverged_fits']}) | "
                     f"{u['sklearn_converged_macro_f1']:.4f}, {u['sklearn_converged_C']:.3g}, "
                     f"{u.get('same_prediction_as_converged', float('nan')):.1%} | "
                     f"{u['probe_1_seconds']:.2f} / {u['probe_default_seconds']:.2f} | "
                     f"{u['sklearn_1_seconds']:.2f} / {u['sklearn_default_seconds']:.2f} |")
    mean, low = summary["heads/linear_macro_f1_diff_mean"], summary["heads/linear_macro_f1_diff_min"]
    one, default = summary["heads/linear_time_ratio_1thread"], summary["heads/linear_time_ratio_default"]
    first = units[0]
    to_optimum = np.array([u["macro_f1_diff_to_converged"] for u in units])
    lines += ["", f"Macro F1 difference (probe - scikit-learn), mean {mean['value']:+.4f}, lowest {low['value']:+.4f} "
              f"over {mean['units']} units; against scikit-learn with every fit at its optimum ({CONVERGED_SOLVER}, "
              f"tol {CONVERGED_TOL:g}) mean {to_optimum.mean():+.4f}, lowest {to_optimum.min():+.4f}; C at an end of the grid of {len(first['C_grid'])} "
              f"({first['C_grid'][0]:.3g} to {first['C_grid'][-1]:.3g}): probe {mean['probe_at_edge']}, "
              f"scikit-learn {mean['sklearn_at_edge']} of {mean['units']}. Time, all units: one thread "
              f"{one['probe_seconds']:.1f} s vs {one['sklearn_seconds']:.1f} s ({one['value']:.2f}x); default threads "
              f"{default['probe_seconds']:.1f} s vs {default['sklearn_seconds']:.1f} s ({default['value']:.2f}x). "
              f"{first['dataset']}, {first['n_train']} / {first['n_val']} / {first['n_test']} train / val / test crops, "
              f"{first['dims']} dimensions, {first['classes']} classes."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xferlab.benchmarks.heads", description=__doc__.splitlines()[0])
    parser.add_argument("--record", type=Path, help="write the rows, machine and revision here (JSON)")
    parser.add_argument("--from", dest="source", type=Path, help="render the table of a saved record instead of running")
    parser.add_argument("--table", type=Path, help="write the markdown table here")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    from xferlab.benchmarks.common import publish

    if args.source:
        publish(json.loads(args.source.read_text())["results"], table, table_path=args.table)
        return 0
    from xferlab.bench import machine
    from xferlab.benchmarks.common import versions

    publish(bench_head_vs_sklearn(repeats=args.repeats), table, args.record, args.table, machine=machine(),
            versions=versions())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
