"""`dataset=fovs`: a lab's own fields of view (OME-TIFF, OME-Zarr, CZI, ND2, LIF through bioio),
listed by a table (`xferlab.data.importers.fov_table`), imported with the same nucleus
segmentation, crop rule and single-cell masking as `dataset=opencell_raw` (`fields`).

From the files' metadata (`fov_plan`): channel names (the store's channels are `dataset.channels`'
keys, each filled from the file channel it names; null: the file's own names), pixel size
(`dataset.pixel_size_um` overrides it; none known: the store has none, and only backbones with
`scale=match` need one) and dtype (integers kept, floats stored as float32). Nuclei are segmented on
the store channel `dataset.nucleus`. Sample ids are `<field id>_y<row>_x<col>` (crops) or the field
id (mode=fov); the `target` column is the table's group, `label` its class (sorted names, or
`dataset.classes`), `split` the table's split where it has one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from xferlab.data.importers.bioimages import projection_option
from xferlab.data.importers.common import DataImportError, ImportedSource, plain, positive_int, require_path
from xferlab.data.importers.crop_rules import CropRule
from xferlab.data.importers.fields import (FieldSettings, check_mode, settings_spec, single_cell_options,
                                            whole_fov_problem, write_fields)
from xferlab.data.importers.folder import SPLIT_CODES, check_classes
from xferlab.data.importers.fov_plan import FieldPlan, plan_fields
from xferlab.data.importers.fov_table import read_fov_table
from xferlab.data.importers.nuclei import check_options
from xferlab.data.importers.parallel import import_workers
from xferlab.data.store import StoreWriter
from xferlab.runtime.provenance import digest

log = logging.getLogger(__name__)

PROBLEMS_SHOWN = 10
TABLE_HINT = "a table of field-of-view files (columns path, group, label; optional split, scene, field)"


def check_mapping(channels: Any) -> dict[str, Any] | None:
    """`dataset.channels`: null, or store channel name -> file channel name or index."""
    mapping = plain(channels)
    if mapping is None:
        return None
    if not isinstance(mapping, dict) or not mapping or not all(isinstance(k, str) and k for k in mapping):
        raise ValueError(f"dataset.channels={channels!r}: expected null (the files' own channel names) or a mapping "
                         "from store channel to the file's channel name or index, e.g. {nucleus: DAPI, protein: GFP}")
    if len(set(map(str, mapping.values()))) != len(mapping):
        raise ValueError(f"dataset.channels={mapping}: two store channels take the same file channel")
    return mapping


def inventory(paths: Sequence[Path]) -> str:
    """Digest of the input files' names and sizes (an OME-Zarr folder: every file in it)."""
    entries = []
    for path in sorted(set(paths)):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        entries += [(str(f), f.stat().st_size) for f in files]
    return digest(entries, 16)


class FovsSource(ImportedSource):
    """Fields of view in lab formats (see the module docstring), as nucleus crops or whole fields."""

    def __init__(self, name: str, table: str | None, channels: Mapping[str, Any] | None = None,
                 nucleus: str = "nucleus", z_projection: str | int = "max", pixel_size_um: float | None = None,
                 mode: str = "crops", size: int = 128, crop_size: int = 200, max_crops_per_fov: int | None = None,
                 crop_overlap: float = 0.5, crop_seed: int = 0, segmentation: Mapping[str, Any] | None = None,
                 single_cell: Mapping[str, Any] | None = None, classes: Sequence[str] | None = None,
                 workers: int | str = "auto"):
        super().__init__(name)
        self.table = table
        self.channels = check_mapping(channels)
        if self.channels is not None and nucleus not in self.channels:
            raise ValueError(f"dataset.nucleus={nucleus!r} is not a store channel; dataset.channels names "
                             f"{list(self.channels)}. Set dataset.nucleus to the channel with the nuclear stain.")
        self.nucleus = str(nucleus)
        self.projection = projection_option(plain(z_projection))
        if pixel_size_um is not None and not float(pixel_size_um) > 0:
            raise ValueError(f"dataset.pixel_size_um={pixel_size_um!r}: expected micrometres per pixel (> 0), or null "
                             "to take it from the files' metadata")
        self.pixel_size_um = None if pixel_size_um is None else float(pixel_size_um)
        self.single_cell = single_cell_options(plain(single_cell))
        self.mode = check_mode(mode, self.single_cell)
        self.size = positive_int(size, "dataset.size")
        self.crop_size = positive_int(crop_size, "dataset.crop_size")
        self.crop_rule = CropRule(max_crops_per_fov, crop_overlap, crop_seed)
        self.segmentation = check_options(plain(segmentation))
        self.classes = None if classes is None else check_classes(classes)
        import_workers(workers, 1)  # a bad value fails here, before any file is read
        self.workers = workers

    def csv(self) -> Path:
        csv = require_path(self.table, "dataset.table", self.name, TABLE_HINT)
        if not csv.is_file():
            raise FileNotFoundError(f"dataset.table={self.table}: {csv} is not a file; point it at the CSV table")
        return csv

    def scan(self) -> tuple[dict[str, Any], tuple[Path, pd.DataFrame]]:
        csv = self.csv()
        table = read_fov_table(csv)
        paths = [(csv.parent / p).resolve() for p in table["path"]]
        missing = [p for p in paths if not p.exists()]
        if missing:
            row = paths.index(missing[0]) + 1
            raise DataImportError(f"{missing[0]}: listed in {csv} (data row {row}) but no such file; fix the path or "
                                  f"remove the row ({len(missing)} file(s) missing)")
        spec = {"importer": "fovs", "importer_version": 1, "table": str(csv),
                "rows": digest(table.to_dict(orient="list"), 16), "inputs": inventory(paths),
                "channels": self.channels, "nucleus": self.nucleus, "z_projection": self.projection,
                "mode": self.mode, "size": self.size, "classes": self.classes}
        spec.update(settings_spec(self))
        return spec, (csv, table)

    def plan(self, csv: Path, table: pd.DataFrame) -> FieldPlan:
        plan = plan_fields(table, csv, self.channels, self.projection, self.pixel_size_um)
        if plan.channel_names and self.nucleus not in plan.channel_names:
            plan.problems.append(f"{plan.fields[0].path if plan.fields else csv}: no channel {self.nucleus!r} "
                                 f"(dataset.nucleus) among the files' channels {plan.channel_names}. Set dataset.nucleus "
                                 "to the nuclear stain's channel, or map it with dataset.channels.nucleus=<its name>")
        if self.mode == "fov" and plan.fields:
            fov_size = plan.field_px[1] if plan.pixel_size_um is not None else 0
            from xferlab.data.importers.bioimages import scene_headers

            sizes = {}
            for field in plan.fields:
                if field.path not in sizes:
                    header = scene_headers(field.path)[field.scene]
                    sizes[field.path] = whole_fov_problem(field.path, (header.height, header.width), fov_size)
            plan.problems += [p for p in sizes.values() if p]
        return plan

    def input_problems(self, limit: int = PROBLEMS_SHOWN) -> list[str]:
        """What the import would refuse, from the table and the files' headers (no pixel read)."""
        try:
            csv = self.csv()
            table = read_fov_table(csv)
        except (FileNotFoundError, DataImportError) as err:
            return [str(err)]
        problems = self.plan(csv, table).problems
        if len(problems) > limit:
            problems = problems[:limit] + [f"... and {len(problems) - limit} more problem(s) with the files of {csv}"]
        return problems

    def stored_pixel_size(self, plan: FieldPlan) -> float | None:
        if plan.pixel_size_um is None:
            return None
        window = self.crop_size if self.mode == "crops" else plan.field_px[1]
        return plan.pixel_size_um * window / self.size

    def store_dtype(self, plan: FieldPlan) -> str:
        return "float32" if np.dtype(plan.dtype).kind == "f" else str(np.dtype(plan.dtype))

    def class_names(self, table: pd.DataFrame) -> list[str]:
        if self.classes is None:
            return sorted(set(table["label"]) - {""})
        unknown = sorted(set(table["label"]) - set(self.classes) - {""})
        if unknown:
            raise DataImportError(f"{self.table}: labels {unknown} are not in dataset.classes {self.classes}; correct "
                                  "the labels (a typo?), add the classes, or leave the cells empty (unlabelled)")
        return self.classes

    def planned_samples(self) -> pd.DataFrame:
        """One row per field (`target`, `label`, and `split` where the table has one), from the
        table and headers alone: what a grouped split depends on."""
        _, (csv, table) = self.scan()
        plan = self.plan(csv, table)
        plan.raise_problems()
        return self.sample_table([(f, None) for f in plan.fields], self.class_names(table), table)

    def planned_channels(self) -> list[str]:
        """The store's channel names, from the config or the first file's metadata."""
        if self.channels is not None:
            return list(self.channels)
        _, (csv, table) = self.scan()
        return self.plan(csv, table).channel_names

    def planned_geometry(self) -> dict[str, Any]:
        _, (csv, table) = self.scan()
        plan = self.plan(csv, table)
        plan.raise_problems()
        field_px = plan.field_px[1] if self.mode == "fov" else self.crop_size
        return {"image_size": self.size, "pixel_size_um": self.stored_pixel_size(plan), "whole_field": self.mode == "fov",
                "field_px": field_px, "field_pixel_size_um": plan.pixel_size_um}

    def sample_table(self, placed: list, classes: list[str], table: pd.DataFrame) -> pd.DataFrame:
        index = {name: i for i, name in enumerate(classes)}
        rows = []
        for field, centre in placed:
            y, x = centre if centre is not None else (-1, -1)
            suffix = "" if self.mode == "fov" or centre is None else f"_y{y}_x{x}"
            rows.append({"sample_id": field.name + suffix, "target": field.group, "label": index.get(field.label, -1),
                         "field_id": field.name, "file": field.file, "scene": field.scene, "time": field.time,
                         "crop_y": y, "crop_x": x, "split": SPLIT_CODES[field.split]})
        samples = pd.DataFrame(rows)
        samples["label"] = samples["label"].astype(np.int64)
        if not table["split"].ne("").any():
            samples = samples.drop(columns="split")
        return samples

    def build(self, path: Path, spec: dict[str, Any], inputs: tuple[Path, pd.DataFrame]) -> None:
        csv, table = inputs
        plan = self.plan(csv, table)
        plan.raise_problems()
        classes = self.class_names(table)
        channels = plan.channel_names
        fov_size = plan.field_px[1] if self.mode == "fov" and plan.pixel_size_um is not None else 0
        settings = FieldSettings(self.mode, self.size, self.crop_size, self.crop_rule, self.segmentation,
                                 self.single_cell, fov_size, channels.index(self.nucleus), self.store_dtype(plan))
        summary: dict[str, Any] = {"fovs": len(plan.fields)}
        attrs = {"source": spec, "label_rule": "csv_label", "import_summary": summary,
                 "pixel_size_um": self.stored_pixel_size(plan), "field_pixel_size_um": plan.pixel_size_um,
                 "pixel_size_from": "dataset.pixel_size_um" if self.pixel_size_um is not None else "file metadata",
                 "file_dtype": plan.dtype}
        with StoreWriter(path, n_samples=None, channel_names=channels, image_size=(self.size, self.size),
                         dtype=settings.dtype, classes=classes, attrs=attrs) as writer:
            done = write_fields(
                writer, self.name, plan.fields, settings, self.workers, label=lambda f: f.name, group=lambda f: f.group,
                where=str(csv), none_hint=f"Check that dataset.nucleus={self.nucleus!r} is the nuclear stain, adjust "
                "dataset.segmentation (min_area, min_contrast) or dataset.crop_size, or use dataset.mode=fov.")
            summary.update(samples=len(done.placed), fovs_without_crops=len(done.empty),
                           why_without_crops=done.empty, samples_per_target=done.per_group)
            writer.write_samples(self.sample_table(done.placed, classes, table))
        log.info("%s: %d samples from %d fields (%d without a crop%s)", self.name, len(done.placed), len(plan.fields),
                 len(done.empty), f": {sorted(done.empty)}" if done.empty else "")
