"""SynthCell rendering speed (crops/s) with one process and with every core."""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any


def bench_synthcell_render(n_targets: int = 96, crops: int = 8, size: int = 64) -> list[dict[str, Any]]:
    from xferlab.data.synthcell.source import SynthCellSource

    results = []
    domains = {"opencell": {"genes": "opencell", "labels": {"rule": "single_grade3"}},
               "hpa": {"genes": "hpa", "domain_shift": 1.0, "channels": ["nucleus", "protein", "microtubules", "er"],
                       "labels": {"rule": "none"}}}
    for domain, settings in domains.items():
        for workers in sorted({1, os.cpu_count() or 1}):
            source = SynthCellSource("bench", size=size, crops_per_target=crops, n_targets=n_targets, workers=workers,
                                     **settings)
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                store = source.open(tmp)
                seconds = time.perf_counter() - start
            results.append({"benchmark": f"synthcell_render/{domain}", "workers": workers, "crops": len(store),
                            "size": size, "seconds": round(seconds, 3), "value": round(len(store) / seconds, 1),
                            "unit": "crops/s"})
    return results
