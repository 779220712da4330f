"""`dataset=synthcell` / `dataset=synthcell_hpa`: render a SynthCell domain into an image store.

Each target's crops come from its own random stream (`seed`, target index), so the store is the
same whatever the number of worker processes.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xferlab.data.labels import MULTILABEL_RULES, opencell_annotations, target_labels
from xferlab.data.sources import BuiltSource
from xferlab.data.store import StoreWriter
from xferlab.data.synthcell.domains import IMAGING, Target, hpa_targets, opencell_targets
from xferlab.data.synthcell.render import render_crop
from xferlab.runtime.progress import bar, track

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
DOMAINS = tuple(IMAGING)


def render_target(args: tuple[int, Target, str, int, int, int]) -> np.ndarray:
    """All crops of one target: `(crops, C, size, size)` uint16."""
    index, target, domain, size, crops, seed = args
    rng = np.random.default_rng([seed, index])
    imaging = IMAGING[domain].scaled(size)
    level = rng.lognormal(0.0, 0.45)  # the target's expression level
    return np.stack([render_crop(rng, imaging, list(target.mixture), level * rng.lognormal(0.0, 0.15), size)
                     for _ in range(crops)])


class SynthCellSource(BuiltSource):
    def __init__(self, name: str, domain: str = "opencell", size: int = 64, crops_per_target: int = 8,
                 n_targets: int | None = None, seed: int = 0, labels: dict[str, Any] | None = None,
                 workers: int | None = None):
        if domain not in DOMAINS:
            raise ValueError(f"dataset.domain={domain!r}; choose one of {DOMAINS}")
        labels = dict(labels or {})
        if domain == "hpa" and labels.get("rule") not in (None, "none"):
            raise ValueError("the hpa domain is unlabelled (a pretraining source): set dataset.labels.rule=none")
        if domain == "hpa" and n_targets is None:
            raise ValueError("dataset.n_targets must be set for the hpa domain (how many HPA genes to render)")
        self.name = name
        self.workers = workers
        self.spec = {
            "source": "synthcell", "generator_version": GENERATOR_VERSION, "domain": domain, "size": int(size),
            "crops_per_target": int(crops_per_target), "n_targets": None if n_targets is None else int(n_targets),
            "seed": int(seed), "labels": labels,
        }

    def targets(self) -> list[Target]:
        spec = self.spec
        if spec["domain"] == "hpa":
            return hpa_targets(spec["n_targets"], spec["seed"])
        targets = list(opencell_targets())
        if spec["n_targets"] is not None:
            # an evenly spread, deterministic subset (keeps the class mix of the full table)
            pick = np.linspace(0, len(targets) - 1, spec["n_targets"]).round().astype(int)
            targets = [targets[i] for i in np.unique(pick)]
        return targets

    def build(self, path: Path) -> None:
        spec = self.spec
        targets = self.targets()
        imaging = IMAGING[spec["domain"]]
        rule = spec["labels"].get("rule", "none") if spec["labels"] else "none"
        if rule == "none":
            classes: tuple[str, ...] = ()
            labels = np.full(len(targets), -1)
            sets = None
        else:
            table = target_labels(opencell_annotations(), rule, int(spec["labels"].get("min_targets", 15)),
                                  int(spec["labels"].get("min_grade", 2)))
            classes = table.classes
            labels, sets = table.for_targets([t.ensg_id for t in targets])
        crops = spec["crops_per_target"]
        n = len(targets) * crops
        rows = []
        for i, t in enumerate(targets):
            for k in range(crops):
                rows.append({"sample_id": f"{t.ensg_id}-{k:02d}", "target": t.name, "ensg_id": t.ensg_id,
                             "fov_id": f"synth-{i:05d}-{k:02d}", "crop_y": spec["size"] // 2,
                             "crop_x": spec["size"] // 2, "label": int(labels[i]), "annotations": t.description})
        workers = self.workers or min(os.cpu_count() or 1, 8)
        jobs = [(i, t, spec["domain"], spec["size"], crops, spec["seed"]) for i, t in enumerate(targets)]
        log.info("rendering %d SynthCell %s crops (%d targets x %d) with %d processes into %s",
                 n, spec["domain"], len(targets), crops, workers, path)
        start = time.perf_counter()
        with StoreWriter(path, n_samples=n, channel_names=imaging.channels, image_size=(spec["size"], spec["size"]),
                         dtype="uint16", classes=classes, chunk_rows=max(crops * 32, 256),
                         attrs={"source": spec, "label_rule": rule}) as writer:
            if workers > 1:
                with mp.get_context("fork").Pool(workers) as pool, bar(n, "render SynthCell", unit="img") as progress:
                    for block in pool.imap(render_target, jobs, chunksize=8):
                        writer.append(block)
                        progress.update(len(block))
            else:
                for job in track(jobs, len(jobs), "render SynthCell", unit="target"):
                    writer.append(render_target(job))
            writer.write_samples(pd.DataFrame(rows))
            if rule in MULTILABEL_RULES:
                writer.write_label_sets(np.repeat(sets, crops, axis=0))
        seconds = time.perf_counter() - start
        log.info("rendered %d crops in %.1f s (%.0f crops/s)", n, seconds, n / seconds)
