"""`python -m xferlab.report <sweep dir> [<sweep dir> ...]`: mean ± std of test metrics per condition.

Writes `summary.csv` and `summary.md` into `--out` (default: `<first dir>/report`) and prints the
Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xferlab.io import atomic_write_text
from xferlab.reporting.aggregate import collect_runs, summarize, to_markdown


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
    print(f"\ntables written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
