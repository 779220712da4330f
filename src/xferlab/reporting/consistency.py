"""Runs that belong together: within an experiment, every run's config must equal its siblings'
except in the keys its sweep set. A run that differs elsewhere is flagged and left out.

A key counts as set by the sweep when a job's command line set it (Hydra's record,
`.hydra/overrides.yaml`) or a job recorded it among its settings (`metrics.json["settings"]`,
`runtime.settings`); a config group set so (`backbone=...`) covers every key under it. Such a key
may differ between runs because the report keeps them apart by it: a condition key or a setting
names the condition (`reporting.conditions`), a replicate key (`runtime.settings.REPLICATE_KEYS`)
makes a unit. Any other difference (a config file edited between runs, a changed default) could
only be pooled silently, so the runs that differ are flagged, each with the keys and values at fault.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from xferlab.runtime.loggers import flatten
from xferlab.runtime.provenance import ADDED_KEYS, NON_SEMANTIC_KEYS, WHERE_IT_RUNS, digest
from xferlab.runtime.settings import REPLICATE_KEYS, display, override_key

# never compared: what cannot change a number, and the replicate keys (a run's unit, not its condition)
IGNORED = set(NON_SEMANTIC_KEYS) | set(WHERE_IT_RUNS) | set(REPLICATE_KEYS)
SHOWN = 5  # differing keys named per flagged run


def hydra_overrides(run_dir: Path) -> list[str]:
    """The overrides Hydra recorded for the job (`.hydra/overrides.yaml`; [] without one)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    return [str(o) for o in (yaml.safe_load(path.read_text()) or [])] if path.exists() else []


def run_config(run_dir: Path) -> tuple[dict, set[str]]:
    """The run's flat config and the keys set on its command line (from Hydra's overrides.yaml)."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").exists() else {}
    keys = {override_key(o) for o in hydra_overrides(run_dir)}
    flat = flatten(config or {})
    if flat:  # a config from before a key existed holds the value that reproduces its results
        flat = {**ADDED_KEYS, **flat}
    return flat, keys


def compared(key: str, swept: set[str]) -> bool:
    """Whether two sibling runs must agree on `key`: not an ignored key, not a swept one."""
    if key.split(".")[0] in IGNORED or key in IGNORED:
        return False
    return not any(key == s or key.startswith(s + ".") for s in swept)


def recorded_settings(runs: pd.DataFrame) -> list[dict]:
    """Each run's `metrics.json["settings"]` ({} for a run from before they were recorded)."""
    column = runs["settings"] if "settings" in runs.columns else [None] * len(runs)
    return [s if isinstance(s, dict) else {} for s in column]


def differences(reference: dict, flat: dict, swept: set[str]) -> str:
    """The compared keys in which `flat` differs from `reference`, with both values."""
    keys = sorted(k for k in set(reference) | set(flat) if reference.get(k) != flat.get(k) and compared(k, swept))
    listed = ", ".join(f"{k}={display(flat.get(k))} (kept runs: {display(reference.get(k))})" for k in keys[:SHOWN])
    return listed + (f" and {len(keys) - SHOWN} more key(s)" if len(keys) > SHOWN else "")


def flag_inconsistent(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(kept runs, flagged runs with a `reason`). The keys set on any job's command line or
    recorded among its settings count as swept for the whole experiment; the largest family of
    identical remaining configs is kept."""
    kept, flagged = [], []
    for _, group in runs.groupby("experiment", sort=False):
        configs, swept = {}, set()
        for run_dir, settings in zip(group["run_dir"], recorded_settings(group)):
            flat, keys = run_config(Path(run_dir))
            configs[run_dir] = flat
            swept |= keys | set(settings)
        def family(flat: dict) -> str:
            return digest({k: v for k, v in flat.items() if compared(k, swept)})
        families = group["run_dir"].map(lambda d: family(configs[d]))
        main = families.value_counts().index[0]
        kept.append(group[families == main])
        odd = group[families != main].copy()
        if len(odd):
            reference = configs[group[families == main]["run_dir"].iloc[0]]
            odd["reason"] = [
                f"config differs from its siblings in {differences(reference, configs[d], swept)}: no job's command "
                "line set it, so the report can neither name a condition by it nor pool it; rerun the run with its "
                "siblings' config, or set the key on every job's command line to make it part of the condition"
                for d in odd["run_dir"]]
            flagged.append(odd)
    empty = runs.iloc[0:0]
    return (pd.concat(kept) if kept else empty), (pd.concat(flagged) if flagged else empty.assign(reason=[]))
