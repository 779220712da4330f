"""`dataset=synthcell*`: render SynthCell genes at a domain shift into an image store.

Each target's crops come from its own random stream (`seed`, target index) and its plate's from
(`seed`, plate), so the store is the same whatever the number of worker processes. A target's crops
come from `fovs_per_target` fields of view (crop k from FOV k mod fovs), which share their plate's
and their own conditions; targets sit on plates of `PLATE_SIZE` in table order.
"""

from __future__ import annotations

import logging
import os
import time
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xferlab.data.importers.parallel import ordered_map
from xferlab.data.labels import MULTILABEL_RULES, opencell_annotations, target_labels
from xferlab.data.sources import BuiltSource
from xferlab.data.store import StoreWriter
from xferlab.data.synthcell.domains import Target, hpa_targets, imaging_at, opencell_targets
from xferlab.data.synthcell.render import field_conditions, plate_conditions, render_crop
from xferlab.runtime.progress import bar, track

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2
GENES = ("opencell", "hpa")
PLATE_SIZE = 96


def render_target(args: tuple[int, Target, float, tuple[str, ...], int, int, int, int]) -> np.ndarray:
    """All crops of one target: `(crops, C, size, size)` uint16."""
    index, target, shift, channels, size, crops, fovs, seed = args
    imaging = imaging_at(shift, channels).scaled(size)
    plate = plate_conditions(np.random.default_rng([seed, 1_000_003, index // PLATE_SIZE]))
    rng = np.random.default_rng([seed, index])
    level = rng.lognormal(0.0, 0.45)  # the target's expression level
    fields = [field_conditions(rng, imaging, plate) for _ in range(fovs)]
    return np.stack([render_crop(rng, imaging, list(target.mixture), level * rng.lognormal(0.0, 0.15), size,
                                 fields[k % fovs], rng.uniform(0.15, 0.85, 2)) for k in range(crops)])


class SynthCellSource(BuiltSource):
    def __init__(self, name: str, genes: str = "opencell", domain_shift: float = 0.0,
                 channels: list[str] | tuple[str, ...] = ("nucleus", "protein"), size: int = 64,
                 crops_per_target: int = 8, fovs_per_target: int = 2, n_targets: int | None = None,
                 labelled_only: bool = True, seed: int = 0, labels: dict[str, Any] | None = None,
                 workers: int | None = None):
        if genes not in GENES:
            raise ValueError(f"dataset.genes={genes!r}; choose one of {GENES}")
        imaging_at(domain_shift, tuple(channels))  # checks the shift and the channels
        labels = dict(labels or {})
        if genes == "hpa" and labels.get("rule") not in (None, "none"):
            raise ValueError("dataset.genes=hpa is unlabelled (a pretraining source): set dataset.labels.rule=none")
        if genes == "hpa" and n_targets is None:
            raise ValueError("dataset.n_targets must be set for genes=hpa (how many HPA genes to render)")
        if not 1 <= int(fovs_per_target) <= int(crops_per_target):
            raise ValueError(f"dataset.fovs_per_target={fovs_per_target}: it must lie in [1, crops_per_target="
                             f"{crops_per_target}]")
        self.name = name
        self.workers = workers
        self.spec = {
            "source": "synthcell", "generator_version": GENERATOR_VERSION, "genes": genes,
            "domain_shift": float(domain_shift), "channels": [str(c) for c in channels], "size": int(size),
            "crops_per_target": int(crops_per_target), "fovs_per_target": int(fovs_per_target),
            "n_targets": None if n_targets is None else int(n_targets), "labelled_only": bool(labelled_only),
            "seed": int(seed), "labels": labels,
        }

    def targets(self) -> list[Target]:
        spec = self.spec
        if spec["genes"] == "hpa":
            return hpa_targets(spec["n_targets"], spec["seed"])
        targets = list(opencell_targets())
        if spec["labelled_only"] and self.label_table is not None:
            # targets outside the label rule are in no split: rendering them would only cost extraction time
            labels, _ = self.label_table.for_targets([t.ensg_id for t in targets])
            targets = [t for t, y in zip(targets, labels) if y >= 0]
        if spec["n_targets"] is not None:
            # an evenly spread, deterministic subset (keeps the class mix of the full table)
            pick = np.linspace(0, len(targets) - 1, spec["n_targets"]).round().astype(int)
            targets = [targets[i] for i in np.unique(pick)]
        return targets

    @property
    def rule(self) -> str:
        return self.spec["labels"].get("rule", "none")

    @cached_property
    def label_table(self):
        """The label rule applied to the annotation table (None for an unlabelled store)."""
        labels = self.spec["labels"]
        if self.rule == "none":
            return None
        return target_labels(opencell_annotations(), labels["rule"], int(labels.get("min_targets", 15)),
                             int(labels.get("min_grade", 2)))

    def build(self, path: Path) -> None:
        spec = self.spec
        targets = self.targets()
        channels = tuple(spec["channels"])
        rule = self.rule
        if self.label_table is None:
            classes: tuple[str, ...] = ()
            labels = np.full(len(targets), -1)
            sets = None
        else:
            classes = self.label_table.classes
            labels, sets = self.label_table.for_targets([t.ensg_id for t in targets])
        crops = spec["crops_per_target"]
        n = len(targets) * crops
        rows = []
        for i, t in enumerate(targets):
            for k in range(crops):
                rows.append({"sample_id": f"{t.ensg_id}-{k:02d}", "target": t.name, "ensg_id": t.ensg_id,
                             "fov_id": f"synth-{i:05d}-{k % spec['fovs_per_target']:02d}", "crop_y": spec["size"] // 2,
                             "crop_x": spec["size"] // 2, "label": int(labels[i]), "annotations": t.description})
        workers = self.workers or min(os.cpu_count() or 1, 8)
        jobs = [(i, t, spec["domain_shift"], channels, spec["size"], crops, spec["fovs_per_target"], spec["seed"])
                for i, t in enumerate(targets)]
        log.info("rendering %d SynthCell crops of %s genes at domain shift %.2f (%d targets x %d) with %d processes "
                 "into %s", n, spec["genes"], spec["domain_shift"], len(targets), crops, workers, path)
        start = time.perf_counter()
        with StoreWriter(path, n_samples=n, channel_names=list(channels), image_size=(spec["size"], spec["size"]),
                         dtype="uint16", classes=classes, chunk_rows=max(crops * 32, 256),
                         attrs={"source": spec, "label_rule": rule}) as writer:
            if workers > 1:
                # spawned, not forked: a fork of a job's process (its torch and logging threads, submitit's
                # SIGTERM handler under SLURM) can leave a worker stuck and the job waiting on it for good
                with bar(n, "render SynthCell", unit="img") as progress:
                    for block in ordered_map(render_target, jobs, workers):
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
