"""The table of a `dataset=fovs` import: one row per file (or per scene of a file).

Columns:
- `path`: the file (OME-TIFF, OME-Zarr folder, CZI, ND2, LIF), relative to the table's folder or absolute;
- `group`: what stays together in a split and is scored as one in the report's "per protein"
  rows: the protein, compound or condition (stored as `target`);
- `label`: the class name (empty: unlabelled);
- `split` (optional): train, val or test (empty: unused), for a split fixed by the table;
- `scene` (optional): the scene (position) the row stands for, by name or index; empty: every scene
  of the file, each a field of its own;
- `field` (optional): the field's id, the start of its sample ids; empty: the file's name without
  its format suffix (with `_s<scene>` when the file has several scenes, `_t<time>` with time points).

A group carries one label and one split: rows of one group that disagree are refused (a protein
cannot be in two classes or on both sides of a split).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from xferlab.data.importers.common import DataImportError, read_csv_table
from xferlab.data.importers.folder import SPLIT_CODES

REQUIRED = ("path", "group", "label")
OPTIONAL = ("split", "scene", "field")


def read_fov_table(csv: Path) -> pd.DataFrame:
    """The checked table, every optional column present (empty where the CSV has none), cells stripped."""
    table = read_csv_table(csv, REQUIRED, f"dataset=fovs needs columns {list(REQUIRED)} (optional: {list(OPTIONAL)})")
    if table.empty:
        raise DataImportError(f"{csv}: no rows; list one field-of-view file per row with columns {list(REQUIRED)}")
    for column in OPTIONAL:
        if column not in table.columns:
            table[column] = ""
    table = table[[*REQUIRED, *OPTIONAL]].apply(lambda c: c.str.strip())
    for column in ("path", "group"):
        empty = table.index[table[column] == ""]
        if len(empty):
            raise DataImportError(f"{csv}: empty {column} in data row {int(empty[0]) + 1}; every row needs one")
    twice = table.duplicated(["path", "scene"], keep=False)
    if twice.any():
        rows = [int(i) + 1 for i in table.index[twice]]
        raise DataImportError(f"{csv}: data rows {rows[:5]} list the same file (and scene) {table['path'][twice].iloc[0]!r}"
                              "; list each field once")
    bad = sorted(set(table["split"]) - set(SPLIT_CODES))
    if bad:
        raise DataImportError(f"{csv}: split values {bad}; use train, val, test or leave the cell empty")
    for column in ("label", "split"):
        per_group = table.groupby("group")[column].unique()
        mixed = per_group[per_group.map(len) > 1]
        if len(mixed):
            group = mixed.index[0]
            raise DataImportError(
                f"{csv}: group {group!r} has {column}s {sorted(mixed.iloc[0])}; a group (protein, compound) has one "
                f"{column}, since its fields are split and scored together. Correct the rows of {group!r}, or give "
                "the differing rows groups of their own.")
    return table


def missing_files(table: pd.DataFrame, csv: Path) -> list[str]:
    """One message per row whose file is not there."""
    problems = []
    for row, name in enumerate(table["path"]):
        path = (csv.parent / name).resolve()
        if not path.exists():
            problems.append(f"{path}: listed in {csv} (data row {row + 1}) but no such file; fix the path or "
                            "remove the row")
    return problems
