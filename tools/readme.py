"""The result tables of the README and the documentation pages come from files, never typed by hand.

    .venv/bin/python tools/readme.py update outputs/sweeps/demo/latest/report [<report> ...]  # `make readme-results`
    .venv/bin/python tools/readme.py check                                        # exit 1 on drift

`update` copies each experiment's `summary.md`, `verdicts.md` and `confusions.md` from a report folder into
`docs/results/<experiment>.md`, `<experiment>_verdicts.md` and `<experiment>_confusions.md` (and a kNN sweep's
macro F1 by k, `knn_macro_f1_by_k.csv`, as the table `docs/results/<experiment>_by_k.md`), then
rewrites every README block that quotes one of them. A block is whatever lies between

    <!-- results: docs/results/<file>.md -->
    <!-- /results -->

`update` also writes `docs/results/shipped_backbones.md`, the table of the shipped backbones and
their pretraining curves, from `src/xferlab/backbones/shipped/manifest.json`; `docs/calibration.md`
from its newest record `docs/bench/calibration-<date>.json` and `docs/results/calibration_summary.md`
from that page; and each benchmark table of `BENCH_TABLES` from its newest record under `docs/bench/`
(`make bench`'s run, the probe, the scale run, codecs, the host's feed, peers, the GPU run). Tests
keep each equal to its source.

`check` (and the fast test tests/tools/test_readme.py) says which blocks of which page differ from
their files, and which numbers a page types outside its results blocks: a decimal, a time or a
rate must come from a results block unless `docs/stated_numbers.yml` lists it as a setting, a
published figure or arithmetic."""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
RESULTS = DOCS / "results"
BLOCK = re.compile(r"(<!-- results: (?P<file>\S+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)


def pages(root: Path = ROOT) -> list[Path]:
    """The README and every Markdown page of the documentation, the quoted files under docs/results/ excepted."""
    docs = root / "docs"
    return [root / "README.md", *sorted(p for p in docs.rglob("*.md") if (docs / "results") not in p.parents)]


def blocks(text: str) -> list[tuple[str, str]]:
    """(file, quoted text) of every results block, in order."""
    return [(m["file"], m["body"]) for m in BLOCK.finditer(text)]


def render(text: str, root: Path = ROOT) -> str:
    """`text` with every results block holding its file's current content."""
    def fill(m: re.Match) -> str:
        path = root / m["file"]
        if not path.exists():
            raise SystemExit(f"a results block quotes {m['file']}, which does not exist: run `make demo` and "
                             "`make readme-results`, or remove the block")
        body = path.read_text()
        return m.group(1) + body + ("" if body.endswith("\n") else "\n") + m.group(4)

    return BLOCK.sub(fill, text)


def drift(text: str, root: Path = ROOT) -> list[str]:
    """The files whose block in `text` differs from them."""
    return [f for (f, body), (_, new) in zip(blocks(text), blocks(render(text, root))) if body != new]


def by_k_table(path: Path) -> str:
    """The report's kNN macro F1 by k (rows: backbone, columns: k) as a Markdown table, best first
    (by the mean over k), 4 decimals."""
    import pandas as pd

    curve = pd.read_csv(path, index_col=0)
    curve = curve.loc[curve.mean(axis=1).sort_values(ascending=False, kind="stable").index]
    lines = ["| backbone | " + " | ".join(f"k={k}" for k in curve.columns) + " |", "|---" * (len(curve.columns) + 1) + "|"]
    lines += [f"| `{name}` | " + " | ".join(f"{v:.4f}" for v in row) + " |" for name, row in curve.iterrows()]
    return "\n".join(lines) + "\n"


def shipped_table(manifest: dict) -> str:
    """The shipped backbones: what each was pretrained on, how long, and its curves (DINO loss against
    the uniform bound ln(out_dim); kNN accuracy on the evaluation domain's validation split after
    epoch 1, at its best, at the end)."""
    lines = ["| file | pretrained on | pretraining seed | epochs x images | time | loss: first -> last epoch "
             "(uniform bound) | kNN acc.: epoch 1 -> best -> last |", "|---" * 7 + "|"]
    for name, e in sorted(manifest.items()):
        curves = e.get("curves") or []
        knn = [c.get("val/knn_accuracy") for c in curves if c.get("val/knn_accuracy") is not None]
        loss = [c["train/loss"] for c in curves if "train/loss" in c]
        config = e.get("config", "")
        shift = re.search(r"domain_shift: ([0-9.]+)", config)
        source = {"photos": "photographs (RGB)"}.get(e["dataset"], f"{e['dataset']}"
                                                      + (f" (shift {float(shift[1]):g})" if shift else ""))
        seed = re.search(r"(?m)^seed: (\d+)", config)
        lines.append(f"| `{e['file']}` | {source}, {len(e['in_channels'])} ch | {seed[1] if seed else '?'} | "
                     f"{e['epochs']} x {e['n_images']:,} | {e['pretrain_seconds'] / 60:.1f} min | "
                     + (f"{loss[0]:.2f} -> {loss[-1]:.2f} ({e['uniform_loss']:.2f})" if loss else "–") + " | "
                     + (f"{knn[0]:.3f} -> {max(knn):.3f} -> {knn[-1]:.3f}" if knn else "–") + " |")
    return "\n".join(lines) + "\n"


def calibration_table(text: str) -> str:
    """The old-against-new table of docs/calibration.md (`python -m xferlab.reporting.calibration`),
    with its heading as a bold line and the note below it."""
    start = text.index("## Old against new")
    end = text.index("\n## ", start + 1)
    heading, _, body = text[start:end].partition("\n")
    return f"**{heading.removeprefix('## ')}**\n{body.rstrip()}\n"


def write_calibration_table(results: Path = RESULTS) -> Path:
    text = calibration_page()
    if text is not None:
        (DOCS / "calibration.md").write_text(text)
    path = results / "calibration_summary.md"
    path.write_text(calibration_table((DOCS / "calibration.md").read_text()))
    return path


def _results(module: str, function: str = "table", section: str | None = None, prefix: str = ""):
    """A renderer of a record's rows (of one of its sections; those whose name starts with `prefix`)
    by `xferlab.benchmarks.<module>.<function>`."""
    def render(record: dict) -> str:
        import importlib

        rows = record["sections"][section]["results"] if section else record["results"]
        rows = [r for r in rows if r.get("benchmark", "").startswith(prefix)]
        return getattr(importlib.import_module(f"xferlab.benchmarks.{module}"), function)(rows)
    return render


def _bench(*prefixes: str):
    def render(record: dict) -> str:
        from xferlab.bench import markdown

        return markdown(record, prefixes)
    return render


# docs/results/<name> -> (the records under docs/bench/ it is rendered from, the newest counting; renderer)
BENCH_TABLES = {
    "linear_probe.md": ("heads-*.json", _results("heads")),
    "probe_selection.md": ("probe-selection-*.json", _results("probe_selection")),
    "scale.md": ("scale-*.json", _results("scale")),
    "bench_cpu.md": ("bench-*.json", _bench()),  # `make bench`
    "integrity.md": ("bench-*.json", _bench("verify_reads/", "fsync/")),
    # scripts/gpu_bench.sh writes gpu-<device>-<time>.json; the 2026-11-26 run's record has the older name
    "gpu_extraction.md": (("gpu-*.json", "h200-extraction-*.json"), _results("extraction", prefix="extraction_gpu/")),
    "codecs.md": ("cpu-feed-*.json", _results("codecs", section="codecs")),
    "host_feed.md": ("cpu-feed-*.json", _results("host_feed", section="host_feed")),
    "peer_feed.md": ("cpu-feed-*.json", _results("peers", "feed_table", section="peer_feed")),
    "peers.md": ("cpu-feed-*.json", _results("peers", section="peers")),
}


DATED = re.compile(r"\d{4}-\d{2}-\d{2}(?:_\d{2}-\d{2}-\d{2})?")


def bench_record(patterns: str | tuple[str, ...]) -> Path | None:
    """The newest record under docs/bench/ matching `patterns`, by the date (and time) in its name,
    which every record's name carries whatever its prefix."""
    found = [p for pattern in ([patterns] if isinstance(patterns, str) else patterns)
             for p in (DOCS / "bench").glob(pattern)]
    return max(found, key=lambda p: (m[0] if (m := DATED.search(p.name)) else "", p.name), default=None)


def bench_table(name: str) -> str | None:
    """docs/results/<name> as its benchmark renders it from its newest record (None: no record)."""
    import json

    pattern, render_record = BENCH_TABLES[name]
    record = bench_record(pattern)
    if record is None:
        return None
    return render_record(json.loads(record.read_text()))


def calibration_page() -> str | None:
    """docs/calibration.md as `xferlab.reporting.calibration` writes it from its newest record
    (docs/bench/calibration-<date>.json; None: no record)."""
    import json

    from xferlab.reporting.calibration import page

    record = bench_record("calibration-*.json")
    return None if record is None else page(json.loads(record.read_text()))


def write_bench_tables(results: Path = RESULTS) -> list[Path]:
    written = []
    for name in BENCH_TABLES:
        text = bench_table(name)
        if text is not None:
            (results / name).write_text(text)
            written.append(results / name)
    return written


def write_shipped_table(results: Path = RESULTS) -> Path:
    from xferlab.ssl.export import read_manifest

    path = results / "shipped_backbones.md"
    path.write_text(shipped_table(read_manifest()))
    return path


def copy_report(report: Path, results: Path = RESULTS) -> list[Path]:
    """Each experiment's summary.md and verdicts.md from a report folder into `results`."""
    if not report.is_dir():
        raise SystemExit(f"no report folder at {report}: run `make demo` first (it writes "
                         "outputs/sweeps/demo/latest/report)")
    written = []
    results.mkdir(parents=True, exist_ok=True)
    for summary in sorted(report.glob("*/summary.md")):
        name = summary.parent.name
        for source, target in ((summary, f"{name}.md"), (summary.parent / "verdicts.md", f"{name}_verdicts.md"),
                               (summary.parent / "confusions.md", f"{name}_confusions.md"),
                               (summary.parent / "cost.md", f"{name}_cost.md")):
            if source.exists():
                shutil.copyfile(source, results / target)
                written.append(results / target)
        by_k = summary.parent / "knn_macro_f1_by_k.csv"
        if by_k.exists():
            (results / f"{name}_by_k.md").write_text(by_k_table(by_k))
            written.append(results / f"{name}_by_k.md")
    if not written:
        raise SystemExit(f"{report} holds no <experiment>/summary.md: is it a report folder of xferlab.report?")
    return written


# A measurement typed into a page: a decimal number, or any number with a unit of time or rate, or a ratio (12x).
MEASURED = re.compile(r"(?<![\w.+-])(?P<number>[+-]?\d[\d,]*(?:\.\d+)?)(?P<unit>\s?(?:ms|s|min|h|minutes|seconds|"
                      r"hours|images/s|crops/s|files/s|FOVs/s|GB/s|MiB/s)|x)?(?![\w/]|\.\d)")
FENCED = re.compile(r"```.*?```", re.S)
INLINE_CODE = re.compile(r"`[^`]*`")
STATED = DOCS / "stated_numbers.yml"


def prose(text: str) -> str:
    """`text` without its results blocks and code, but with the comments of its code blocks (where
    a command's comment may say how long it takes)."""
    def comments(m: re.Match) -> str:
        return "\n".join(line.split(" # ", 1)[1] for line in m.group(0).splitlines() if " # " in line)

    return INLINE_CODE.sub(" ", FENCED.sub(comments, BLOCK.sub(" ", text)))


def typed_numbers(text: str) -> list[str]:
    """The numbers of a page that look measured and lie outside its results blocks and code."""
    return [m.group(0).strip() for m in MEASURED.finditer(prose(text)) if "." in m["number"] or m["unit"]]


def stated() -> dict[str, dict[str, str]]:
    """docs/stated_numbers.yml: per page, the numbers it states that are not measurements (a setting,
    a published figure, arithmetic), each with why."""
    import yaml

    if not STATED.is_file():
        return {}
    return {page: {str(k): v for k, v in (numbers or {}).items()}
            for page, numbers in (yaml.safe_load(STATED.read_text()) or {}).items()}


# pages written whole by a command from a record (checked by `check`: equal to what the record renders)
GENERATED = {"docs/calibration.md": calibration_page}


def unsourced(root: Path | None = None) -> dict[str, list[str]]:
    """Per page (path relative to the root), the numbers typed outside results blocks that
    docs/stated_numbers.yml does not list; and, under '<page> (listed, not on the page)', listed
    numbers the page no longer holds."""
    root = root or ROOT
    allowed = stated()
    out = {}
    for page in pages(root):
        name = page.relative_to(root).as_posix()
        if name in GENERATED:
            continue
        found = typed_numbers(page.read_text())
        extra = sorted(set(found) - set(allowed.get(name, {})))
        gone = sorted(set(allowed.get(name, {})) - set(found))
        if extra:
            out[name] = extra
        if gone:
            out[f"{name} (listed, not on the page)"] = gone
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("update", help="copy reports' tables into docs/results/, the README and the pages")
    up.add_argument("reports", type=Path, nargs="+", help="report folders (<sweep dir>/report)")
    sub.add_parser("check", help="exit 1 if a block of the README or a page differs from its file")
    args = parser.parse_args(argv)
    if args.command == "update":
        for path in [write_shipped_table(), write_calibration_table(), *write_bench_tables()]:
            print(f"wrote {path.relative_to(ROOT)}")
        for report in args.reports:
            for path in copy_report(report):
                print(f"wrote {path.relative_to(ROOT)}")
        for page in pages():
            text = page.read_text()
            if blocks(text):
                page.write_text(render(text))
                print(f"updated {len(blocks(text))} results block(s) in {page.relative_to(ROOT)}")
        return 0
    stale = [(page, f) for page in pages() for f in drift(page.read_text(), ROOT)]
    for page, f in stale:
        print(f"{page.relative_to(ROOT)} quotes {f} but differs from it: run `make readme-results`", file=sys.stderr)
    for name, render_page in GENERATED.items():
        text = render_page()
        if text is None or text != (ROOT / name).read_text():
            print(f"{name} differs from what its record renders (or it has no record under docs/bench/): "
                  "run `make readme-results`", file=sys.stderr)
            stale.append((ROOT / name, name))
    loose = unsourced()
    for page, numbers in loose.items():
        print(f"{page}: {', '.join(numbers)} typed outside a results block: quote a file of docs/results/ "
              f"rendered from its record instead, or list a number that is no measurement in "
              f"{STATED.relative_to(ROOT)} with why", file=sys.stderr)
    return 1 if stale or loose else 0


if __name__ == "__main__":
    sys.exit(main())
