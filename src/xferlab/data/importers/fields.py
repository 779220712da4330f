"""Fields of view -> stored images: what every field importer shares (`dataset=opencell_raw`, the
OpenCell release layout, and `dataset=fovs`, fields in the formats labs use).

A field is anything with a `name` (its id: the start of its sample ids, and what the crop rule
draws from) and a `read()` giving its `(C, H, W)` pixels. Each field is read once and, in
`mode=crops`, its nuclei segmented on the nucleus channel (`xferlab.data.importers.nuclei`), crop
windows centred on single nuclei whose window lies fully inside the field, chosen by the crop rule
(`xferlab.data.importers.crop_rules`), optionally masked to their own cell (`single_cell`), and
resized to `size`; in `mode=fov` the whole field is resized. Fields are imported in worker processes
(`xferlab.data.importers.parallel`) and written to the store in the fields' order as they come.
A field without a crop is named in a warning and counted in the store's `import_summary`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field as dataclass_field
from functools import partial
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from xferlab.data.importers.common import DataImportError, resize_image, to_dtype
from xferlab.data.importers.crop_rules import CropRule
from xferlab.data.importers.nuclei import cell_territories, mask_other_cells, segment_nuclei
from xferlab.data.importers.parallel import import_workers, ordered_map
from xferlab.data.store import StoreWriter
from xferlab.runtime.progress import track

log = logging.getLogger(__name__)

MODES = ("fov", "crops")


class Field(Protocol):
    name: str

    def read(self) -> np.ndarray: ...


def windows_inside(centres: list[tuple[int, int]], shape: tuple[int, int], crop_size: int) -> list[tuple[int, int]]:
    """The centres whose `crop_size` window lies fully inside an image of `shape`."""
    height, width = shape
    half = crop_size // 2
    return [(y, x) for y, x in centres
            if y - half >= 0 and x - half >= 0 and y - half + crop_size <= height and x - half + crop_size <= width]


def crop_centres(hoechst: np.ndarray, crop_size: int, rule: CropRule | None = None,
                 segmentation: dict[str, Any] | None = None, field: str = "") -> list[tuple[int, int]]:
    """Centres of the crop windows to cut: single nuclei whose `crop_size` window lies inside the
    image, chosen by `rule` (default: all of them)."""
    inside = windows_inside(segment_nuclei(hoechst, segmentation).centres, hoechst.shape, crop_size)
    return (rule or CropRule()).choose(inside, crop_size, field)


def single_cell_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """`dataset.single_cell`: whether crops keep only their own cell, and how far (in nucleus
    radii) a nucleus is grown into its cell."""
    given = dict(options or {})
    unknown = sorted(set(given) - {"enabled", "growth"})
    if unknown:
        raise ValueError(f"dataset.single_cell has unknown key(s) {unknown}; known: ['enabled', 'growth']")
    enabled, growth = given.get("enabled", False), given.get("growth", 1.0)
    if not isinstance(enabled, bool):
        raise ValueError(f"dataset.single_cell.enabled={enabled!r}: expected true or false")
    if isinstance(growth, bool) or not isinstance(growth, (int, float)) or growth < 0:
        raise ValueError(f"dataset.single_cell.growth={growth!r}: expected a number of nucleus radii >= 0")
    return {"enabled": enabled, "growth": float(growth)}


def check_mode(mode: str, single_cell: dict[str, Any]) -> str:
    if mode not in MODES:
        raise ValueError(f"dataset.mode={mode!r}; choose one of {MODES}")
    if single_cell["enabled"] and mode != "crops":
        raise ValueError("dataset.single_cell.enabled=true masks the other cells of nucleus crops; it needs "
                         "dataset.mode=crops")
    return mode


def whole_fov_problem(path: Any, shape: tuple[int, ...], fov_size: int) -> str | None:
    """mode=fov: why a `(C, H, W)` field cannot be stored whole (None: it can); `fov_size` (with a
    pixel size): the size every field must have, the first one's."""
    if shape[-2] != shape[-1]:
        return (f"{path}: FOV of {shape[-2]}x{shape[-1]} px is not square; mode=fov resizes whole FOVs to size x size. "
                "Use dataset.mode=crops.")
    if fov_size and shape[-1] != fov_size:
        return (f"{path}: FOV of {shape[-1]} px, but the first FOV has {fov_size} px; with a pixel size known, "
                "mode=fov needs FOVs of one size (one pixel size per store). Import them with dataset.mode=crops, "
                "or separately.")
    return None


def settings_spec(source: Any) -> dict[str, Any]:
    """The spec keys (the store's name and record) that a fields importer's crop, scale and
    single-cell settings add; `source` has `mode`, `crop_size`, `crop_rule`, `segmentation`,
    `pixel_size_um` and `single_cell` (opencell_raw, fovs)."""
    spec: dict[str, Any] = {}
    if source.mode == "crops":
        spec.update(crop_size=source.crop_size, crop_rule=source.crop_rule.describe(),
                    segmentation=source.segmentation)
    if source.pixel_size_um is not None:
        spec["pixel_size_um"] = source.pixel_size_um
    if source.single_cell["enabled"]:
        spec["single_cell"] = source.single_cell
    return spec


def cut(image: np.ndarray, centre: tuple[int, int], crop_size: int) -> np.ndarray:
    top, left = centre[0] - crop_size // 2, centre[1] - crop_size // 2
    return image[:, top : top + crop_size, left : left + crop_size]


@dataclass(frozen=True)
class FieldSettings:
    """What a worker needs to turn one field into stored images (picklable)."""

    mode: str
    size: int
    crop_size: int
    rule: CropRule
    segmentation: dict[str, Any]
    single_cell: dict[str, Any]
    fov_size: int = 0       # mode=fov with a pixel size: the size every field must have
    nucleus: int = 0        # index of the channel the nuclei are segmented on
    dtype: str = "uint16"   # the stored pixels' dtype


@dataclass
class FieldResult:
    field: Any
    centres: list[tuple[int, int]]  # mode=fov: the field's centre
    images: np.ndarray              # (k, C, size, size), in the order of `centres`
    why_none: str | None = None     # mode=crops without a crop: why
    counts: dict[str, int] = dataclass_field(default_factory=dict)  # nuclei kept, windows inside, crops


def import_field(settings: FieldSettings, field: Field) -> FieldResult:
    """One field read once and turned into its stored images (run in a worker process)."""
    image = field.read()
    if settings.mode == "fov":
        problem = whole_fov_problem(getattr(field, "path", field.name), image.shape, settings.fov_size)
        if problem:
            raise DataImportError(problem)
        return FieldResult(field, [(image.shape[1] // 2, image.shape[2] // 2)],
                           to_dtype(resize_image(image, settings.size), settings.dtype)[None])
    nuclei = segment_nuclei(image[settings.nucleus], settings.segmentation)
    inside = windows_inside(nuclei.centres, image.shape[1:], settings.crop_size)
    centres = settings.rule.choose(inside, settings.crop_size, field.name)
    why = None if centres else nuclei.reason or (
        f"none of its {len(nuclei.centres)} nuclei has a {settings.crop_size} px window inside the FOV")
    territories = None
    if settings.single_cell["enabled"] and centres:
        territories = cell_territories(nuclei, settings.single_cell["growth"])
    crops = []
    for centre in centres:
        if territories is not None:  # the crop's own cell only (its centre lies in its nucleus)
            window = cut(territories[None], centre, settings.crop_size)[0]
            crop = mask_other_cells(cut(image, centre, settings.crop_size), window, int(territories[centre]))
        else:
            crop = cut(image, centre, settings.crop_size)
        crops.append(to_dtype(resize_image(crop, settings.size), settings.dtype))
    images = np.stack(crops) if crops else np.zeros((0, image.shape[0], settings.size, settings.size), settings.dtype)
    return FieldResult(field, centres, images, why,
                       {"nuclei": len(nuclei.centres), "inside": len(inside), "crops": len(centres)})


@dataclass
class ImportedFields:
    """What the fields gave: one (field, centre) per stored image, in store order, and the fields
    without a crop (label -> why)."""

    placed: list[tuple[Any, tuple[int, int]]]
    empty: dict[str, str]
    per_group: dict[str, int]


def write_fields(writer: StoreWriter, name: str, fields: Sequence[Any], settings: FieldSettings, workers: int | str,
                 label: Callable[[Any], str], group: Callable[[Any], str], where: str, none_hint: str) -> ImportedFields:
    """Every field imported (in `workers` processes) and its images appended to `writer` in the
    fields' order; a field without a crop is warned about (`label(field)` names it); no crop at all
    is a DataImportError naming `where` and ending with `none_hint` (what to check)."""
    n = import_workers(workers, len(fields))
    log.info("%s: importing %d FOVs with %d worker process(es)", name, len(fields), n)
    placed: list[tuple[Any, tuple[int, int]]] = []
    empty: dict[str, str] = {}
    per_group: dict[str, int] = {}
    results = ordered_map(partial(import_field, settings), fields, n)
    for result in track(results, len(fields), f"import {name}", unit="FOV"):
        field = result.field
        if result.why_none is not None:
            empty[label(field)] = result.why_none
            log.warning("%s: no crop (%s); the FOV is left out", getattr(field, "path", field.name), result.why_none)
        log.debug("%s: %s", label(field), result.counts)
        placed += [(field, centre) for centre in result.centres]
        per_group[group(field)] = per_group.get(group(field), 0) + len(result.centres)
        if len(result.images):
            writer.append(result.images)
    if len(empty) == len(fields):
        raise DataImportError(f"{where}: no nucleus crops found in {len(fields)} FOV(s) (first: {next(iter(empty.items()))}). "
                              + none_hint)
    return ImportedFields(placed, empty, per_group)
