"""`python -m xferlab.report <sweep dir> [<sweep dir> ...]`: mean ± std of test metrics per condition.

Writes `summary.csv` and `summary.md` into `--out` (default: `<first dir>/report`) and prints the
Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from xferlab.io import atomic_write_text
from xferlab.reporting.aggregate import CONDITION_KEYS, collect_runs, summarize, to_markdown
from xferlab.reporting.confusion import confusion_from_runs, top_confusions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xferlab.report", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep directories holding metrics.json files")
    parser.add_argument("--out", type=Path, default=None, help="where to write the tables")
    args = parser.parse_args(argv)
    try:
        runs = collect_runs(args.dirs)
    except FileNotFoundError as err:
        print(f"xferlab.report: {err}", file=sys.stderr)
        return 2
    table = summarize(runs)
    markdown = to_markdown(table)
    out = args.out or args.dirs[0] / "report"
    atomic_write_text(out / "summary.csv", table.to_csv(index=False))
    atomic_write_text(out / "summary.md", markdown + "\n")
    print(f"test macro F1 over seeds (mean ± sample std), {len(runs)} jobs:\n")
    print(markdown)
    best = table.iloc[0]
    keys = [k for k in CONDITION_KEYS if k in table.columns]
    best_runs = runs[(runs[keys] == best[keys]).all(axis=1)]
    if "label" in pd.read_csv(Path(best_runs["run_dir"].iloc[0]) / "predictions.csv", nrows=1).columns:
        matrix = confusion_from_runs(best_runs["run_dir"])
        atomic_write_text(out / "confusion_best.csv", matrix.to_csv())
        name = "-".join(str(best[k]) for k in ("backbone", "channels", "head") if k in best)
        print(f"\nmost confused classes of the best condition ({name}; share of the true class, over seeds):")
        for true, pred, share in top_confusions(matrix):
            print(f"  {true:>18} -> {pred:<18} {share:.2f}")
    print(f"\ntables written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
