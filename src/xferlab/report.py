"""`python -m xferlab.report <sweep dir> [<sweep dir> ...]`: one table per experiment (mean ± std,
n seeds, 95% confidence intervals over seeds and over test targets, paired tests against the best
condition), as Markdown (printed), CSV and LaTeX, plus figures; written to `--out` (default
`<first dir>/report`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xferlab.report", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep directories holding metrics.json files")
    parser.add_argument("--out", type=Path, default=None, help="where to write tables and figures")
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples of test targets (0: off)")
    args = parser.parse_args(argv)
    from xferlab.reporting.build import build_report

    out = args.out or args.dirs[0] / "report"
    try:
        text = build_report(args.dirs, out, n_boot=args.bootstrap)
    except FileNotFoundError as err:
        print(f"xferlab.report: {err}", file=sys.stderr)
        return 2
    print(text)
    print(f"\ntables and figures written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
