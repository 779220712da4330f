"""OpenCell raw z-projections -> image store.

Input layout (the OpenCell image release)::

    <root>/<GENE>_<ENSG>/OC-FOV_<GENE>_<ENSG>_<CID>_<FID>_proj.tif

Each `_proj.tif` is a 2-channel `(2, H, W)` uint16 z-projection (1024x1024 in the release, any size
here): channel 0 is the 405 nm Hoechst stain (`nucleus`), channel 1 the 488 nm mNeonGreen-tagged
protein (`protein`). `_stack.tif` files and anything else in the folders are ignored.

Modes:
- `fov`: each FOV resized to `size` x `size` (one sample per FOV; crop_y/crop_x = FOV centre).
- `crops`: nuclei segmented on the Hoechst channel (`xferlab.data.importers.nuclei`: a threshold
  that debris cannot move, touching nuclei split by a distance-transform watershed, only nuclei of
  a single nucleus's size kept); `crop_size` px windows centred on nuclei whose window lies fully
  inside the FOV, chosen by the crop rule (`xferlab.data.importers.crop_rules`: every such nucleus
  by default, or `max_crops_per_fov` of them spread over the field, `crop_overlap`, `crop_seed`),
  each resized to `size`. A FOV that yields no crop is named in a warning and listed in the store's
  `import_summary` attribute, with the crops of every target. With `single_cell.enabled`, every pixel outside the crop's own cell
  (its nucleus grown by `single_cell.growth` nucleus radii, split with its neighbours) is set to
  the field's background: single-cell crops for single-cell evaluation.

Samples are labelled from the packaged OpenCell annotations by ENSG id (`dataset.labels`); targets
outside the rule are kept as unlabelled (-1). The store holds uint16 pixels.

FOVs are imported in parallel (`dataset.workers`, `xferlab.data.importers.parallel`): each is read
once, segmented and cut in a worker process; the store is the same whatever the number of workers.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from xferlab.data.importers.common import (
    DataImportError,
    ImportedSource,
    annotation_labels,
    file_inventory,
    known_ensg_ids,
    label_options,
    plain,
    positive_int,
    read_tiff,
    require_path,
    tiff_header,
    unknown_target_message,
)
from xferlab.data.importers.crop_rules import CropRule
from xferlab.data.importers.fields import (  # noqa: F401 - crop_centres, cut, windows_inside: this module's API
    FieldSettings,
    check_mode,
    crop_centres,
    cut,
    settings_spec,
    single_cell_options,
    whole_fov_problem,
    windows_inside,
    write_fields,
)
from xferlab.data.importers.nuclei import check_options
from xferlab.data.importers.parallel import import_workers
from xferlab.data.labels import MULTILABEL_RULES
from xferlab.data.store import StoreWriter

log = logging.getLogger(__name__)
# the crop geometry lives in `fields` (shared with dataset=fovs); these names stay importable from here
__all__ = ["OpenCellRawSource", "Fov", "find_fovs", "fov_problem", "read_fov", "crop_centres", "cut", "windows_inside"]

CHANNELS = ("nucleus", "protein")
PROJ_SUFFIX = "_proj.tif"
FILE_PATTERN = re.compile(r"^OC-FOV_(?P<gene>.+)_(?P<ensg>ENSG\d+)_(?P<cid>[^_]+)_(?P<fid>[^_]+)_proj\.tif$")
FOLDER_PATTERN = re.compile(r"^(?P<gene>.+)_(?P<ensg>ENSG\d+)$")
PROBLEMS_SHOWN = 10  # the check before the jobs lists this many FOV problems, then counts the rest
LAYOUT_HINT = "<root>/<GENE>_<ENSG>/OC-FOV_<GENE>_<ENSG>_<CID>_<FID>_proj.tif"


@dataclass(frozen=True)
class Fov:
    """One field of view: its file and the identifiers parsed from its name."""

    path: Path
    gene: str
    ensg_id: str
    cid: str
    fid: str

    @property
    def fov_id(self) -> str:
        return f"{self.cid}_{self.fid}"

    @property
    def name(self) -> str:
        """The field's id: the start of its sample ids, and what the crop rule draws from."""
        return f"{self.ensg_id}_{self.fov_id}"

    def read(self) -> np.ndarray:
        return read_fov(self.path)


def find_fovs(root: Path) -> list[Fov]:
    """Every `_proj.tif` under `root/<GENE>_<ENSG>/`, sorted; names that break the layout are errors."""
    fovs: list[Fov] = []
    seen: dict[tuple[str, str], Fov] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(folder.glob(f"*{PROJ_SUFFIX}"))
        if not files:
            continue
        folder_match = FOLDER_PATTERN.match(folder.name)
        if folder_match is None:
            raise DataImportError(
                f"{folder}: folder name is not <GENE>_<ENSG>; rename it or move it out of dataset.root "
                f"(expected layout {LAYOUT_HINT})"
            )
        for path in files:
            match = FILE_PATTERN.match(path.name)
            if match is None:
                raise DataImportError(
                    f"{path}: file name is not OC-FOV_<GENE>_<ENSG>_<CID>_<FID>_proj.tif; rename or remove it"
                )
            if (match["gene"], match["ensg"]) != (folder_match["gene"], folder_match["ensg"]):
                raise DataImportError(
                    f"{path}: names target {match['gene']}_{match['ensg']} but lies in folder {folder.name}; "
                    "move it to its target's folder"
                )
            fov = Fov(path, match["gene"], match["ensg"], match["cid"], match["fid"])
            twin = seen.setdefault((fov.ensg_id, fov.fov_id), fov)
            if twin is not fov:  # their samples would share ids
                raise DataImportError(
                    f"{path}: the same FOV ({fov.ensg_id}, {fov.fov_id}) as {twin.path}; each FOV must appear once. "
                    "Remove the copy."
                )
            fovs.append(fov)
    if not fovs:
        raise DataImportError(
            f"{root}: no OpenCell FOVs (*{PROJ_SUFFIX}) found. dataset.root must hold one folder per "
            f"target laid out as {LAYOUT_HINT}"
        )
    return fovs


def fov_problem(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> str | None:
    """Why a FOV of this shape and dtype cannot be imported (None: it can). One rule for the import
    (on the pixels) and the check before the jobs (on the TIFF header), so both say the same."""
    shape = tuple(int(n) for n in shape)
    if len(shape) == 2:
        return (f"{path}: one channel of shape {shape}; an OpenCell FOV needs 2 channels as (2, H, W) "
                "(Hoechst nucleus, mNeonGreen protein). Re-export it with both channels.")
    if len(shape) != 3 or shape[0] != len(CHANNELS):
        return (f"{path}: shape {shape}; expected (2, H, W) with the 2 channels (Hoechst nucleus, "
                "mNeonGreen protein) first. Re-export it channel-first or remove it.")
    if np.dtype(dtype) != np.uint16:
        return (f"{path}: dtype {np.dtype(dtype)}; OpenCell raw FOVs are uint16. Re-export the raw uint16 "
                "z-projection (not a normalised or converted copy).")
    return None


def read_fov(path: Path) -> np.ndarray:
    """A `(2, H, W)` uint16 FOV; any other shape or dtype is a DataImportError naming the file."""
    image = read_tiff(path)
    problem = fov_problem(path, image.shape, image.dtype)
    if problem:
        raise DataImportError(problem)
    return image


class OpenCellRawSource(ImportedSource):
    """`dataset=opencell_raw`: OpenCell raw FOVs (see the module docstring) as whole FOVs or nucleus crops."""

    def __init__(
        self,
        name: str,
        root: str | None,
        mode: str = "crops",
        size: int = 128,
        crop_size: int = 200,
        max_crops_per_fov: int | None = None,
        crop_overlap: float = 0.5,
        crop_seed: int = 0,
        segmentation: Mapping[str, Any] | None = None,
        labels: Mapping[str, Any] | None = None,
        allow_unknown_targets: bool = False,
        pixel_size_um: float | None = None,
        single_cell: Mapping[str, Any] | None = None,
        workers: int | str = "auto",
    ):
        super().__init__(name)
        self.single_cell = single_cell_options(plain(single_cell))
        self.mode = check_mode(mode, self.single_cell)
        seg = check_options(plain(segmentation))
        self.root = root
        self.size = positive_int(size, "dataset.size")
        self.crop_size = positive_int(crop_size, "dataset.crop_size")
        self.crop_rule = CropRule(max_crops_per_fov, crop_overlap, crop_seed)
        import_workers(workers, 1)  # a bad value fails here, before any file is read
        self.workers = workers
        self.segmentation = seg
        self.labels = label_options(labels)
        self.allow_unknown_targets = bool(allow_unknown_targets)
        if pixel_size_um is not None and not float(pixel_size_um) > 0:
            raise ValueError(f"dataset.pixel_size_um={pixel_size_um!r}: expected micrometres per FOV pixel (> 0) or null")
        self.pixel_size_um = None if pixel_size_um is None else float(pixel_size_um)

    def scan(self) -> tuple[dict[str, Any], list[Fov]]:
        root = require_path(self.root, "dataset.root", self.name, f"an OpenCell image folder ({LAYOUT_HINT})")
        fovs = find_fovs(root)
        spec = {
            "importer": "opencell_raw",
            "importer_version": 3,  # 2: watershed-split single nuclei; 3: crop rules
            "root": str(root),
            "inputs": file_inventory((f.path for f in fovs), root),
            "mode": self.mode,
            "size": self.size,
            "labels": self.labels,
            "allow_unknown_targets": self.allow_unknown_targets,
        }
        spec.update(settings_spec(self))
        return spec, fovs

    def stored_pixel_size(self, fov_size: int) -> float | None:
        """Micrometres per stored pixel: the FOV's pixel size times the window-to-`size` factor."""
        if self.pixel_size_um is None:
            return None
        window = self.crop_size if self.mode == "crops" else fov_size
        return self.pixel_size_um * window / self.size

    def check_targets(self, fovs: list[Fov]) -> None:
        if self.allow_unknown_targets:
            return
        known = known_ensg_ids()
        for fov in fovs:
            if fov.ensg_id not in known:
                raise DataImportError(unknown_target_message(str(fov.path.parent), fov.ensg_id))

    def input_problems(self, limit: int = PROBLEMS_SHOWN) -> list[str]:
        """What the import would refuse, found from the folder layout, the file names and the TIFF
        headers alone (no pixel is read): the root, the layout, unknown targets, each FOV's shape,
        channel count and dtype, and in mode=fov its size. The first `limit` problems, then one line
        counting the rest. The same messages as the import's errors."""
        try:
            root = require_path(self.root, "dataset.root", self.name, f"an OpenCell image folder ({LAYOUT_HINT})")
            fovs = find_fovs(root)
        except (FileNotFoundError, DataImportError) as err:
            return [str(err)]
        problems = []
        if not self.allow_unknown_targets:
            known = known_ensg_ids()
            unknown = dict.fromkeys((str(f.path.parent), f.ensg_id) for f in fovs if f.ensg_id not in known)
            problems += [unknown_target_message(folder, ensg) for folder, ensg in unknown]
        fov_size = 0
        for fov in fovs:
            try:
                shape, dtype = tiff_header(fov.path)
            except DataImportError as err:
                problems.append(str(err))
                continue
            problem = fov_problem(fov.path, shape, dtype)
            if problem is None and self.mode == "fov":
                problem = whole_fov_problem(fov.path, shape, fov_size)
                fov_size = fov_size or (shape[1] if self.pixel_size_um is not None else 0)
            if problem:
                problems.append(problem)
        if len(problems) > limit:
            problems = problems[:limit] + [f"... and {len(problems) - limit} more problem(s) with the FOVs under {root} "
                                           "like the ones above"]
        return problems

    def planned_samples(self) -> pd.DataFrame:
        """One row per FOV (`target`, `ensg_id`, `label`) from the file names and the annotation
        table, without reading an image: the targets the store will hold and their labels, hence
        the split (a grouped split depends on the targets and labels only). In mode=crops a target
        whose every FOV yields no crop would be missing from the store; only the import can tell."""
        _, fovs = self.scan()
        samples = pd.DataFrame({"target": [f.gene for f in fovs], "ensg_id": [f.ensg_id for f in fovs]})
        samples["label"], _ = annotation_labels(self.labels).for_targets(samples["ensg_id"].tolist())
        return samples

    def planned_geometry(self) -> dict[str, Any]:
        """The stored images' side (px) and micrometres per stored pixel (None when unknown), and
        whether each is a whole field (mode=fov), from the config and the first FOV's TIFF header."""
        _, fovs = self.scan()
        fov_size = tiff_header(fovs[0].path)[0][-1] if self.mode == "fov" else 0
        pixel = self.stored_pixel_size(fov_size)
        return {"image_size": self.size, "pixel_size_um": pixel, "whole_field": self.mode == "fov",
                "field_px": fov_size or self.crop_size, "field_pixel_size_um": self.pixel_size_um}

    def sample_row(self, fov: Fov, y: int, x: int) -> dict[str, Any]:
        """The sample-table row of the image centred at (y, x) of `fov`."""
        suffix = "" if self.mode == "fov" else f"_y{y}_x{x}"
        return {"sample_id": f"{fov.ensg_id}_{fov.fov_id}{suffix}", "target": fov.gene,
                "ensg_id": fov.ensg_id, "fov_id": fov.fov_id, "crop_y": y, "crop_x": x}

    def field_settings(self, fovs: list[Fov]) -> FieldSettings:
        fov_size = tiff_header(fovs[0].path)[0][-1] if self.mode == "fov" and self.pixel_size_um is not None else 0
        return FieldSettings(self.mode, self.size, self.crop_size, self.crop_rule, self.segmentation,
                             self.single_cell, fov_size)

    def build(self, path: Path, spec: dict[str, Any], inputs: list[Fov]) -> None:
        """Every FOV read once, in worker processes; its images written (compressed) as they come,
        in the FOVs' order, into a store whose size is known only at the end."""
        fovs = inputs
        self.check_targets(fovs)
        settings = self.field_settings(fovs)
        target_labels = annotation_labels(self.labels)
        summary: dict[str, Any] = {"fovs": len(fovs)}  # completed below, before the writer closes and records it
        attrs = {"source": spec, "label_rule": self.labels["rule"], "import_summary": summary,
                 "pixel_size_um": self.stored_pixel_size(settings.fov_size)}
        with StoreWriter(path, n_samples=None, channel_names=CHANNELS, image_size=(self.size, self.size),
                         dtype="uint16", classes=target_labels.classes, attrs=attrs) as writer:
            done = write_fields(
                writer, self.name, fovs, settings, self.workers, label=lambda fov: fov.path.name,
                group=lambda fov: fov.gene, where=str(fovs[0].path.parent.parent),
                none_hint="Check that channel 0 is the Hoechst stain, adjust dataset.segmentation (min_area, "
                          "min_contrast) or dataset.crop_size, or use dataset.mode=fov.")
            rows = [self.sample_row(fov, *centre) for fov, centre in done.placed]
            summary.update(samples=len(rows), fovs_without_crops=len(done.empty), why_without_crops=done.empty,
                           samples_per_target=done.per_group)
            samples = pd.DataFrame(rows)
            labels, sets = target_labels.for_targets(samples["ensg_id"].tolist())
            samples["label"] = labels
            writer.write_samples(samples)
            if self.labels["rule"] in MULTILABEL_RULES:
                writer.write_label_sets(sets)
        log.info("%s: %d samples from %d FOVs (%d FOV(s) without a crop%s)", self.name, len(rows), len(fovs),
                 len(done.empty), f": {sorted(done.empty)}" if done.empty else "")
