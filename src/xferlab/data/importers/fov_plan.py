"""From the table and the files' headers to the list of fields a `dataset=fovs` import reads, with
what the store takes from the metadata (channel names, pixel size, dtype), and every problem found
on the way (each naming the file and the fix). No pixel is read: the check before any job and the
import plan the same fields and refuse the same things.

Decisions: every scene and every time point of a file is a field of its own (a row may name one
scene); z planes are projected as `dataset.z_projection` says. All fields must share one pixel
size (metadata or `dataset.pixel_size_um`): mixed pixel sizes are refused, not resampled, since a
crop window of `crop_size` px would then cover a different area in different fields. All fields
must share one dtype (their values on one scale).
"""

from __future__ import annotations

from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from xferlab.data.importers.bioimages import SceneHeader, read_plane, scene_headers, stem
from xferlab.data.importers.common import DataImportError

PIXEL_TOLERANCE = 1e-4  # relative: pixel sizes closer than this are one (float rounding in metadata)


@dataclass(frozen=True)
class BioField:
    """One field: a scene and time point of a file, the channels the store takes from it."""

    path: Path
    scene: int
    time: int
    name: str
    group: str
    label: str
    split: str
    channels: tuple[int, ...]
    projection: str | int
    file: str = ""

    def read(self) -> np.ndarray:
        return read_plane(self.path, self.scene, self.time, self.channels, self.projection)


@dataclass
class FieldPlan:
    fields: list[BioField] = dataclass_field(default_factory=list)
    problems: list[str] = dataclass_field(default_factory=list)
    channel_names: list[str] = dataclass_field(default_factory=list)
    pixel_size_um: float | None = None
    dtype: str | None = None
    field_px: tuple[int, int] | None = None  # the first field's (height, width)

    def raise_problems(self) -> None:
        if self.problems:
            more = f"\n(and {len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
            raise DataImportError("\n".join(self.problems[:5]) + more)


def close(a: float, b: float) -> bool:
    return abs(a - b) <= PIXEL_TOLERANCE * max(abs(a), abs(b))


def channel_indices(path: Path, header: SceneHeader, mapping: Mapping[str, Any] | None) -> tuple[list[str], list[int], str | None]:
    """(store names, file indices, problem) of one scene under `dataset.channels`."""
    where = f"{path}" + (f" (scene {header.scene_name!r})" if header.scene else "")
    if mapping is None:
        return list(header.channels), list(range(len(header.channels))), None
    indices = []
    for role, wanted in mapping.items():
        if isinstance(wanted, (int, np.integer)) and not isinstance(wanted, bool):
            if not 0 <= int(wanted) < len(header.channels):
                return [], [], (f"{where}: dataset.channels.{role}={wanted} but the file has {len(header.channels)} "
                                f"channel(s) {list(header.channels)}; give a channel name or an index below "
                                f"{len(header.channels)}")
            indices.append(int(wanted))
        elif str(wanted) in header.channels:
            indices.append(header.channels.index(str(wanted)))
        else:
            return [], [], (f"{where}: no channel named {wanted!r} (dataset.channels.{role}); the file's channels are "
                            f"{list(header.channels)}. Set dataset.channels.{role} to one of them (or its index).")
    return list(mapping), indices, None


def plan_fields(table: pd.DataFrame, csv: Path, mapping: Mapping[str, Any] | None, projection: str | int,
                pixel_size_um: float | None) -> FieldPlan:
    """The fields of the table's files, their shared channel names, pixel size and dtype, and the
    problems (see the module docstring)."""
    plan = FieldPlan(pixel_size_um=pixel_size_um)
    firsts: dict[str, Any] = {}  # first field's channel names, pixel size, dtype: (value, path)
    names: dict[str, str] = {}
    for row, item in enumerate(table.itertuples(index=False), start=1):
        path = (csv.parent / item.path).resolve()
        if not path.exists():
            plan.problems.append(f"{path}: listed in {csv} (data row {row}) but no such file; fix the path or remove the row")
            continue
        try:
            headers = scene_headers(path)
        except DataImportError as err:
            plan.problems.append(str(err))
            continue
        if item.scene:
            chosen = [h for h in headers if item.scene in (h.scene_name, str(h.scene))]
            if not chosen:
                plan.problems.append(f"{path}: no scene {item.scene!r} (data row {row} of {csv}); its scenes are "
                                     f"{[h.scene_name for h in headers]} (or their index 0-{len(headers) - 1})")
                continue
        else:
            chosen = headers
        for header in chosen:
            channels, indices, problem = channel_indices(path, header, mapping)
            problem = problem or check_scene(path, header, projection)
            if problem is None:
                problem = agree(firsts, "channel names", channels, path, "map them by name with dataset.channels")
            if problem is None and pixel_size_um is None:
                problem = pixel_problem(path, header) or agree(
                    firsts, "pixel size (um)", header.pixel_size_yx[1], path,
                    "resample the files to one pixel size or import them as separate datasets (set dataset.pixel_size_um "
                    "only if the metadata is wrong)")
            problem = problem or agree(firsts, "dtype", header.dtype, path, "convert them to one dtype")
            if problem:
                plan.problems.append(problem)
                continue
            plan.field_px = plan.field_px or (header.height, header.width)
            base = item.field or stem(path)
            base += f"_s{header.scene}" if len(headers) > 1 and not item.scene else ""
            for time in range(header.times):
                name = base + (f"_t{time}" if header.times > 1 else "")
                if name in names:
                    plan.problems.append(f"{path}: field id {name!r} is also {names[name]}'s; give the rows distinct "
                                         "ids in the table's field column (or distinct file names)")
                    continue
                names[name] = str(path)
                plan.fields.append(BioField(path, header.scene, time, name, item.group, item.label, item.split,
                                            tuple(indices), projection, item.path))
    if firsts:
        plan.channel_names = list(firsts["channel names"][0]) if "channel names" in firsts else []
        plan.dtype = firsts.get("dtype", (None,))[0]
        if pixel_size_um is None and "pixel size (um)" in firsts:
            plan.pixel_size_um = firsts["pixel size (um)"][0]
    if not plan.fields and not plan.problems:
        plan.problems.append(f"{csv}: no field of view in the listed files")
    return plan


def check_scene(path: Path, header: SceneHeader, projection: str | int) -> str | None:
    if isinstance(projection, int) and header.planes > 1 and projection >= header.planes:
        return (f"{path}: dataset.z_projection={projection} but the file has {header.planes} z plane(s); choose a "
                "plane below that, or max / mean")
    if np.dtype(header.dtype).kind not in "uif":
        return f"{path}: dtype {header.dtype}; expected integer or float pixels. Convert the file."
    return None


def pixel_problem(path: Path, header: SceneHeader) -> str | None:
    y, x = header.pixel_size_yx
    if x is not None and y is not None and not close(x, y):
        return (f"{path}: pixels of {y} x {x} um (Y x X) are not square; crops need square pixels. Resample the "
                "file, or set dataset.pixel_size_um if the metadata is wrong")
    if (x is None) != (y is None):
        return f"{path}: the metadata gives a pixel size for one axis only ({y} x {x} um, Y x X); fix the metadata"
    return None


def agree(firsts: dict[str, Any], what: str, value: Any, path: Path, fix: str) -> str | None:
    """None when `value` matches the first field's `what` (recording it for the first field)."""
    if what not in firsts:
        firsts[what] = (value, path)
        return None
    first, where = firsts[what]
    same = (first is None and value is None) or (
        first is not None and value is not None and (close(first, value) if isinstance(value, float) else first == value))
    if same:
        return None
    shown = "none in its metadata" if value is None else value
    return (f"{path}: {what} {shown}, but {where} has {'none in its metadata' if first is None else first}; one dataset "
            f"needs one {what}: {fix}")
