"""What tells an experiment's conditions apart, and how a condition is named.

A condition is fixed by the condition keys every run records by name (`CONDITION_KEYS`: dataset,
backbone, channels, head, ...) and by every setting whose value differs between the experiment's
runs (`runtime.settings`: what the jobs' command lines set, e.g. `dataset.mode` swept by
`experiment=paper`, or `backbone.preprocess.intensity=dtype,percentile`, and the dataset's mode).
The replicate keys (`seed`, `split_seed`, `backbone.pretrain_seed`) make a run's unit, never its
condition. Runs that differ in anything else were flagged before (`consistency.flag_inconsistent`).

A run's settings are its `metrics.json["settings"]`. A run from before they were recorded gets them
from Hydra's record of its job, as the job would have recorded them: the keys of
`.hydra/overrides.yaml`, with the values of its resolved `config.yaml` (a config group's option
from `.hydra/hydra.yaml`). A run that lacks a setting its siblings have (not on its command line)
takes the value its `config.yaml` holds (`null` if the key is not there), or `unrecorded`
without a config.yaml.

Names: the values of the condition keys that vary, joined by `-` (`synth_hpa`, `vit-0.5`; a key
that another one determines is left out, `features` beside the backbone), then `, <label>=<value>`
for each setting that varies (`hpa, mode=fov`; labels as in job names, `runtime.settings.labels`).
Conditions that differ in no condition key (or whose naming keys hold no value) are named by
their backbone. Without a setting that
varies, names are what they always were.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd
import yaml

from xferlab.reporting.aggregate import CONDITION_KEYS
from xferlab.reporting.consistency import hydra_overrides, recorded_settings, run_config
from xferlab.runtime.settings import MODE, display, is_setting, labels, override_key, override_value

# settings a condition key already holds under its own name in metrics.json
CONDITION_ALIASES = {"metrics.average_over": "macro_f1_average_over", "backbone.features": "features"}
UNRECORDED = "unrecorded"


class JobRecord:
    """What Hydra and the job left in a run folder, read when first needed."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)

    @cached_property
    def config(self) -> dict | None:
        """The flat resolved config (None without a config.yaml)."""
        return run_config(self.run_dir)[0] if (self.run_dir / "config.yaml").exists() else None

    @cached_property
    def choices(self) -> dict:
        """Each config group's option (`.hydra/hydra.yaml`, `hydra.runtime.choices`)."""
        path = self.run_dir / ".hydra" / "hydra.yaml"
        if not path.exists():
            return {}
        hydra = (yaml.safe_load(path.read_text()) or {}).get("hydra") or {}
        return (hydra.get("runtime") or {}).get("choices") or {}

    def value(self, key: str) -> Any:
        """`key`'s value in this run: a group's option, else the config's value (module docstring)."""
        if key in self.choices:
            return self.choices[key]
        if self.config is None:
            return UNRECORDED
        return self.config.get(key)

    def settings(self) -> dict[str, Any]:
        """The settings the job would have recorded (`runtime.settings.job_settings`)."""
        out: dict[str, Any] = {}
        if self.config is not None and self.config.get(MODE) is not None:
            out[MODE] = self.config[MODE]
        for override in hydra_overrides(self.run_dir):
            key = override_key(override)
            if is_setting(key):
                value = self.value(key)
                out[key] = override_value(override) if value == UNRECORDED else value
        return out


def condition_columns(runs: pd.DataFrame) -> list[str]:
    """The condition keys the runs record."""
    return [c for c in CONDITION_KEYS if c in runs.columns and runs[c].notna().any()]


def naming_keys(runs: pd.DataFrame, keys: list[str]) -> list[str]:
    """The condition keys that name a condition: those that vary, less any that another naming key
    already determines (e.g. `features` when only `pixels` differs in it from the other backbones);
    the backbone when none varies."""
    varying = [k for k in keys if runs[k].nunique(dropna=False) > 1]
    for k in reversed(list(varying)):  # the keys listed first (backbone before features) are kept
        others = [o for o in varying if o != k]
        if others and (runs.groupby(others, dropna=False)[k].nunique(dropna=False) <= 1).all():
            varying.remove(k)
    return varying or ["backbone"]


def with_settings(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """`runs` (of one experiment) with a column per setting whose value differs between them
    (named by its key, e.g. `dataset.mode`, holding `runtime.settings.display` text), and those keys
    in the order the runs recorded them."""
    records = [JobRecord(d) for d in runs["run_dir"]]
    per_run = [recorded or record.settings() for recorded, record in zip(recorded_settings(runs), records)]
    excluded = set(CONDITION_KEYS) | set(CONDITION_ALIASES)
    keys = [k for k in dict.fromkeys(k for s in per_run for k in s) if k not in excluded and is_setting(k)]
    columns = {}
    for key in keys:
        values = [display(s[key] if key in s else record.value(key)) for s, record in zip(per_run, records)]
        if len(set(values)) > 1:
            columns[key] = values
    return runs.assign(**columns), list(columns)


@dataclass(frozen=True)
class Naming:
    """How an experiment's conditions are told apart (`keys`: the columns they are grouped by) and
    named (`base`: the naming condition keys; `settings`: the settings that vary, with `labels`)."""

    keys: list[str]
    base: list[str]
    settings: list[str]
    labels: dict[str, str]

    def base_name(self, row: Mapping, leave_out: Iterable[str] = ()) -> str:
        """The condition keys' part of the name (`leave_out`: keys left out, e.g. the x of a curve)."""
        keys = [k for k in self.base if k not in set(leave_out)] or ["backbone"]
        base = "-".join(str(row[k]) for k in keys if k in row and pd.notna(row[k]) and row[k] != "")
        return base or (str(row["backbone"]) if "backbone" in row and pd.notna(row["backbone"]) else "")

    def setting(self, row: Mapping) -> tuple[tuple[str, str], ...]:
        """The condition's settings: ((key, value), ...)."""
        return tuple((k, row[k]) for k in self.settings)

    def name(self, row: Mapping, leave_out: Iterable[str] = ()) -> str:
        """`hpa`, `vit-0.5`, `hpa, mode=fov` (module docstring)."""
        base = self.base_name(row, leave_out)
        return ", ".join([*([base] if base else []), *(f"{self.labels[k]}={row[k]}" for k in self.settings)])


def naming(runs: pd.DataFrame) -> tuple[pd.DataFrame, Naming]:
    """`runs` (of one experiment) with their varying settings as columns (`with_settings`), and
    how their conditions are told apart and named."""
    runs, settings = with_settings(runs)
    condition = condition_columns(runs)
    return runs, Naming(keys=condition + settings, base=naming_keys(runs, condition), settings=settings,
                        labels=labels(settings))
