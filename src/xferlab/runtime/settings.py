"""A job's settings and its name: what its command line set, recorded so that a report tells
conditions apart from `metrics.json` alone, and a name that says which of them its sweep varied.

A sweep (`-m key=a,b`, or an experiment's `hydra.sweeper.params`) hands each job its own list
of overrides (Hydra keeps it in `<job>/.hydra/overrides.yaml`). A job records in
`metrics.json["settings"]` every override that can change a number, with the value it ran with
(a config group's option name, e.g. `trainer: gpu`; otherwise the resolved value, e.g.
`dataset.mode: fov`), and `dataset.mode` wherever the dataset has a mode, set on the command line
or not. Not settings: the replicate keys (`REPLICATE_KEYS`: a run's unit, paired between
conditions, never a condition), what cannot change a number (`provenance.NON_SEMANTIC_KEYS`,
`provenance.WHERE_IT_RUNS`) and `experiment` (recorded by name). The report makes every setting
whose value differs between an experiment's runs part of their condition
(`reporting.conditions`).

A job's name is `<backbone>-<channels>`, then `<label>=<value>` for every other setting its sweep
varies, then `s<seed>`, and `split<split_seed>` / `pretrain<pretrain_seed>` where the sweep varies
those: `hpa-natural-mode=fov-s0` in `experiment=paper`. What the sweep varies comes from Hydra's
record of it, `<sweep dir>/multirun.yaml`, expanded as its basic sweeper does
(`job_overrides`): the keys given more than one value. A single run varies nothing and
keeps the short name. A setting is labelled by the last part of its key (`dataset.mode` ->
`mode`) unless two shown settings share it (then by the whole key).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from xferlab.runtime.provenance import NON_SEMANTIC_KEYS, WHERE_IT_RUNS

log = logging.getLogger(__name__)

# A run's unit (split_seed, seed, pretrain_seed): repeats of one condition, paired between conditions.
REPLICATE_KEYS = ("seed", "split_seed", "backbone.pretrain_seed")
# Recorded in metrics.json by name, never as a setting.
BY_NAME = ("experiment", "experiment_name")
MODE = "dataset.mode"
MULTIRUN_FILE = "multirun.yaml"  # Hydra's record of a sweep: its master config, the command line's sweeps included


def override_key(override: str) -> str:
    """`+backbone.x=1` -> `backbone.x`; `db@pkg=mysql` -> `db`."""
    return override.split("=", 1)[0].lstrip("+~").split("@", 1)[0]


def override_value(override: str) -> str | None:
    """The text after `=` (None for a deletion, `~key`)."""
    return override.split("=", 1)[1] if "=" in override else None


def is_setting(key: str) -> bool:
    """Whether a config key, set on a job's command line, is a setting (module docstring)."""
    top = key.split(".", 1)[0]
    return not (top in NON_SEMANTIC_KEYS or key in WHERE_IT_RUNS or key in REPLICATE_KEYS or key in BY_NAME)


def display(value: Any) -> str:
    """A setting's value as text: a string as it is, anything else as JSON (`0.5`, `true`,
    `null`, `[0.001, 0.0001]`), so a value reads alike from metrics.json, config.yaml or a name."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def job_settings(cfg: DictConfig, overrides: Sequence[str]) -> dict[str, Any]:
    """The settings of a job composed as `cfg` from the command-line `overrides` (module docstring)."""
    settings: dict[str, Any] = {}
    mode = OmegaConf.select(cfg, MODE, default=None)
    if mode is not None:
        settings[MODE] = mode
    for override in overrides:
        key = override_key(override)
        if not is_setting(key):
            continue
        node = OmegaConf.select(cfg, key, default=None)
        if isinstance(node, DictConfig):  # a config group: its option's name
            settings[key] = override_value(override)
        elif isinstance(node, ListConfig):
            settings[key] = OmegaConf.to_container(node, resolve=True)
        else:
            settings[key] = node
    return settings


def job_overrides(config: DictConfig) -> list[list[str]]:
    """The override list of every job of a multirun: the cartesian product of the sweep's
    parameters (`hydra.sweeper.params` first, the command line after and winning), as Hydra's
    basic sweeper forms them."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    arguments = [f"{k}={v}" for k, v in params.items()]
    arguments += list(OmegaConf.select(config, "hydra.overrides.task", default=None) or [])
    hydra = GlobalHydra.instance()  # its config loader expands glob(...) sweeps over a group's options
    parser = OverridesParser.create(config_loader=hydra.config_loader() if hydra.is_initialized() else None)
    choices: dict[str, list[str]] = {}
    for override in parser.parse_overrides(arguments):
        key = override.get_key_element()
        if override.is_sweep_override():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(combo) for combo in itertools.product(*choices.values())]


def swept_keys(master: DictConfig) -> list[str]:
    """The keys a sweep gives more than one value (its jobs' overrides: `job_overrides`),
    in the sweep's order, from its master config (`<sweep dir>/multirun.yaml`)."""
    values: dict[str, set[str | None]] = {}
    for job in job_overrides(master):
        for override in job:
            values.setdefault(override_key(override), set()).add(override_value(override))
    return [key for key, seen in values.items() if len(seen) > 1]


def hydra_sweep(cfg: DictConfig) -> tuple[list[str], list[str]]:
    """(this job's command-line overrides, the keys its sweep varies), from Hydra when Hydra
    launched this very job (its run directory is `cfg.paths.output_dir`); ([], []) otherwise,
    e.g. for `run_job` called in-process on a composed config."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return [], []
    hydra = HydraConfig.get()
    output_dir = OmegaConf.select(cfg, "paths.output_dir", default=None)
    if output_dir is None or os.path.abspath(str(hydra.runtime.output_dir)) != os.path.abspath(str(output_dir)):
        return [], []  # a Hydra config left by another job of this process
    overrides = [str(o) for o in hydra.overrides.task]
    if hydra.mode != RunMode.MULTIRUN:
        return overrides, []
    record = Path(str(hydra.sweep.dir)) / MULTIRUN_FILE
    if not record.is_file():  # a sweeper that keeps no record: the settings are recorded all the same
        log.warning("%s is missing, so this job's name cannot say which keys its sweep varies; its settings are "
                    "in metrics.json all the same", record)
        return overrides, []
    return overrides, swept_keys(OmegaConf.load(record))


def labels(keys: Iterable[str]) -> dict[str, str]:
    """Each key's label: its last part, or the whole key where two keys share their last part."""
    keys = list(keys)
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (short if last.count(short) == 1 else k) for k, short in zip(keys, last)}


def job_name(cfg: DictConfig, settings: dict[str, Any], swept: Sequence[str]) -> str:
    """`<backbone>-<channels>[-<label>=<value>...]-s<seed>[-split<n>][-pretrain<n>]` (module docstring)."""
    shown = [k for k in swept if is_setting(k) and k not in ("backbone", "channels") and k in settings]
    named = labels(shown)
    parts = [str(cfg.backbone.name), str(cfg.channels.name), *(f"{named[k]}={display(settings[k])}" for k in shown),
             f"s{cfg.seed}"]
    if "split_seed" in swept:
        parts.append(f"split{cfg.split_seed}")
    if "backbone.pretrain_seed" in swept:
        parts.append(f"pretrain{OmegaConf.select(cfg, 'backbone.pretrain_seed')}")
    return "-".join(parts)
