"""`python -m xferlab.bench` (`make bench`): speed measurements, printed as a table and saved to
`outputs/bench/<timestamp>.json` with the machine they came from.

Benchmarks measure; tests never assert wall-clock times.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import torch

from xferlab import __version__
from xferlab.benchmarks.common import versions
from xferlab.runtime.io import atomic_write_json
from xferlab.runtime.provenance import git_revision


def _lazy(module: str, function: str) -> Callable[[], list[dict[str, Any]]]:
    def run() -> list[dict[str, Any]]:
        return getattr(importlib.import_module(f"xferlab.benchmarks.{module}"), function)()
    return run


# name -> benchmark, run in this order
BENCHMARKS: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "extraction": _lazy("extraction", "bench_extraction"),
    "extraction_memory": _lazy("memory", "bench_extraction_memory"),
    "synthcell_render": _lazy("render", "bench_synthcell_render"),
    "heads": _lazy("heads", "bench_head_vs_sklearn"),
    "sweep": _lazy("sweep", "bench_sweep_cost"),
    "integrity": _lazy("integrity", "bench_integrity"),
}
ON_REQUEST = {  # named to run; the whole GPU check: python -m xferlab.benchmarks.gpu (scripts/gpu_bench.sh)
    "extraction_gpu": _lazy("extraction", "bench_extraction_gpu"),
    "codecs": _lazy("codecs", "bench_codecs"),
    "host_feed": _lazy("host_feed", "bench_host_feed"),
    "peers": _lazy("peers", "bench_peers"),
    "peer_feed": _lazy("peers", "bench_peer_feed"),
    "scale": _lazy("scale", "bench_scale"),  # ~15 min on 2 cores: the real path at scale (make bench-scale)
}


def machine() -> dict[str, Any]:
    return {"host": platform.node(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'benchmark':<40} {'value':>10}  {'unit':<10} {'target':>8}  met"]
    for row in rows:
        target = row.get("target")
        met = "" if target is None else ("yes" if row.get("meets_target") else "NO")
        lines.append(f"{row['benchmark']:<40} {row['value']:>10}  {row['unit']:<10} "
                     f"{'' if target is None else target:>8}  {met}")
    return "\n".join(lines)


def detail(r: dict[str, Any]) -> str:
    """What a row's value was measured from, in words (docs/performance.md's table)."""
    kind = r["benchmark"].split("/")[0]
    if kind == "extraction":
        return (f"pipeline {r['pipeline_images_per_s']:,.1f} vs raw forward {r['raw_images_per_s']:,.1f} images/s; "
                f"{r['images']:,} images, {r.get('stored_size', r['input_size'])} -> {r['input_size']} px")
    if kind == "extraction_memory":
        return (f"{r['images_large']:,} vs {r['images_small']:,} images: {r['peak_extra_mib_large']} vs "
                f"{r['peak_extra_mib_small']} MiB above the process's baseline; the larger store decodes to "
                f"{r['store_decoded_mib_large']} MiB")
    if kind == "synthcell_render":
        return f"{r['crops']:,} crops of {r['size']} px in {r['seconds']:.1f} s, {r['workers']} worker process(es)"
    if r["benchmark"].startswith("sweep_cost/") and "sweep_seconds" in r:
        return f"{r['seeds']} seeds {r['sweep_seconds']} s vs one seed {r['one_seed_seconds']} s, cold cache"
    if kind == "verify_reads":
        return (f"reading {r['chunk_mib']} MiB of chunks: {r['read_checked_s']} s checked vs {r['read_unchecked_s']} s "
                f"not; extraction {r['extract_s']} s ({r['images']:,} images, {r['input_px']} px)")
    if kind == "fsync":
        return f"fsync {r['fsync_s']} s of {r['publish_s']} s publishing ({r['images']:,} images)"
    return r.get("what", "")


def markdown(record: dict[str, Any], prefixes: tuple[str, ...] = ()) -> str:
    """A `make bench` record as a Markdown table (rows whose name starts with one of `prefixes`, or
    all but the per-unit rows of `heads`), headed by where and when it was measured."""
    m = record["machine"]
    rows = [r for r in record["results"] if not r["benchmark"].startswith("heads/unit/")
            and (not prefixes or r["benchmark"].startswith(prefixes))]
    lines = [f"Measured {record['time'][:10]} at revision `{record.get('git_revision') or 'unknown'}` on {m['processor']}, "
             f"{m['cpu_count']} cores, {m['torch_threads']} torch threads, torch {m['torch']}"
             + (f", {m['cuda']}" if m.get("cuda") else "")
             + (f"; load average {load['before']} before, {load['after']} after" if (load := record.get("load_average"))
                else "") + "." + (f" {record['note'][0].upper()}{record['note'][1:]}." if record.get("note") else ""), "",
             "| benchmark | measured | from | target |", "|---|---|---|---|"]
    for r in rows:
        target = "" if r.get("target") is None else f"{r['target']} ({'met' if r.get('meets_target') else 'NOT met'})"
        lines.append(f"| `{r['benchmark']}` | **{r['value']}** {r['unit']} | {detail(r)} | {target} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xferlab.bench", description=__doc__.splitlines()[0])
    known = {**BENCHMARKS, **ON_REQUEST}
    parser.add_argument("names", nargs="*", default=list(BENCHMARKS),
                        help=f"benchmarks to run (default: {list(BENCHMARKS)}; also {list(ON_REQUEST)})")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"))
    parser.add_argument("--record", type=Path, default=None,
                        help="save the record here instead of <out>/<time>.json (docs/bench/bench-<date>.json is the "
                             "one docs/performance.md quotes)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(known))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(known)}")
    load_before, revision = os.getloadavg()[0], git_revision()  # the code that runs, read before the tree can change
    rows = [row for name in args.names for row in known[name]()]
    record = {"time": datetime.now().isoformat(timespec="seconds"), "xferlab": __version__,
              "git_revision": revision, "machine": machine(), "versions": versions(),
              "load_average": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
              "results": rows}
    path = args.record or args.out / f"{datetime.now():%Y-%m-%d_%H-%M-%S}.json"
    atomic_write_json(path, record)
    print(format_table(rows))
    print(f"\nmachine: {record['machine']}\nsaved to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
