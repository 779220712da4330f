"""`python -m xferlab.report <sweep dir> [<sweep dir> ...]`: one table per experiment (mean ± std
over (split, seed, pretraining seed) units, per crop and per protein, with 95% intervals over test proteins), the
planned paired comparisons (Holm-corrected) with their verdicts, per-class intervals, as Markdown
(printed), CSV and LaTeX, plus figures (a 2-D UMAP of each condition's test embeddings among them); written to `--out` (default `<first dir>/report`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

METHODS = ("umap", "tsne", "pca", "none")  # xferlab.reporting.embedding_map.METHODS, without importing it here


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xferlab.report", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep directories holding metrics.json files")
    parser.add_argument("--out", type=Path, default=None, help="where to write tables and figures")
    parser.add_argument("--bootstrap", type=int, default=2000,
                        help="bootstrap draws of the test proteins (0: no intervals and no comparisons)")
    parser.add_argument("--reference", default=None,
                        help="compare every condition with this one, within each setting the sweep varied: `random` "
                             "meets `hpa, mode=fov` as `random, mode=fov` (default: the experiment's report.reference)")
    parser.add_argument("--pairs", choices=("all", "none"), default=None,
                        help="also compare every pair of conditions of the same settings, and each condition "
                             "across one setting (default: the experiment's report.pairs)")
    parser.add_argument("--map", choices=METHODS, default="umap", dest="embedding_map",
                        help="2-D map of each condition's test embeddings (umap: the first takes ~1 min to compile; "
                             "pca: instant; none: no map)")
    args = parser.parse_args(argv)
    from xferlab.reporting.build import build_report

    out = args.out or args.dirs[0] / "report"
    try:
        text = build_report(args.dirs, out, n_boot=args.bootstrap, reference=args.reference, pairs=args.pairs,
                            embedding_map=args.embedding_map)
    except (FileNotFoundError, ValueError) as err:
        print(f"xferlab.report: {err}", file=sys.stderr)
        return 2
    print(text)
    print(f"\ntables and figures written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
