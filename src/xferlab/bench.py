"""`python -m xferlab.bench` (`make bench`): speed measurements, printed as a table and saved to
`outputs/bench/<timestamp>.json` with the machine they came from.

Benchmarks measure; tests never assert wall-clock times.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import torch

from xferlab import __version__
from xferlab.io import atomic_write_json
from xferlab.provenance import git_revision


def bench_synthcell_render(n_targets: int = 96, crops: int = 8, size: int = 64) -> list[dict[str, Any]]:
    """SynthCell rendering into a store (crops/s), with one process and with every core."""
    from xferlab.data.synthcell.source import SynthCellSource

    results = []
    for domain in ("opencell", "hpa"):
        for workers in sorted({1, os.cpu_count() or 1}):
            labels = {"rule": "single_grade3"} if domain == "opencell" else {"rule": "none"}
            source = SynthCellSource("bench", domain=domain, size=size, crops_per_target=crops, n_targets=n_targets,
                                     labels=labels, workers=workers)
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                store = source.open(tmp)
                seconds = time.perf_counter() - start
            results.append({"benchmark": f"synthcell_render/{domain}", "workers": workers, "crops": len(store),
                            "size": size, "seconds": round(seconds, 3), "value": round(len(store) / seconds, 1),
                            "unit": "crops/s"})
    return results


BENCHMARKS: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "synthcell_render": bench_synthcell_render,
}


def machine() -> dict[str, Any]:
    return {"host": platform.node(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xferlab.bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(BENCHMARKS), help=f"benchmarks to run: {list(BENCHMARKS)}")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"))
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    rows = [row for name in args.names for row in BENCHMARKS[name]()]
    record = {"time": datetime.now().isoformat(timespec="seconds"), "xferlab": __version__,
              "git_revision": git_revision(), "machine": machine(), "results": rows}
    path = args.out / f"{datetime.now():%Y-%m-%d_%H-%M-%S}.json"
    atomic_write_json(path, record)
    print(f"{'benchmark':<32} {'workers':>7} {'value':>10}  unit")
    for row in rows:
        print(f"{row['benchmark']:<32} {row.get('workers', ''):>7} {row['value']:>10}  {row['unit']}")
    print(f"\nmachine: {record['machine']}\nsaved to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
