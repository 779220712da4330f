"""Runs that belong together: within an experiment, every run's config must equal its siblings'
except in the keys its sweep varied. A run that differs elsewhere is flagged and left out."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from xferlab.runtime.loggers import flatten
from xferlab.runtime.provenance import ADDED_KEYS, NON_SEMANTIC_KEYS, digest

# seed and split_seed make a run's unit (repeats paired across conditions), not its condition
IGNORED = set(NON_SEMANTIC_KEYS) | {"extract.num_workers", "seed", "split_seed"}


def run_config(run_dir: Path) -> tuple[dict, set[str]]:
    """The run's flat config and the keys set on its command line (from Hydra's overrides.yaml)."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").exists() else {}
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
    keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides or []}
    flat = flatten(config or {})
    if flat:  # a config from before a key existed holds the value that reproduces its results
        flat = {**ADDED_KEYS, **flat}
    return flat, keys


def compared(key: str, swept: set[str]) -> bool:
    """Whether two sibling runs must agree on `key`: not a non-semantic key, not a swept one."""
    if key.split(".")[0] in IGNORED or key in IGNORED:
        return False
    return not any(key == s or key.startswith(s + ".") for s in swept)


def flag_inconsistent(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(kept runs, flagged runs with a `reason`). The overridden keys of all runs of an experiment
    count as swept; the largest family of identical remaining configs is kept."""
    kept, flagged = [], []
    for _, group in runs.groupby("experiment", sort=False):
        configs, swept = {}, set()
        for run_dir in group["run_dir"]:
            flat, keys = run_config(Path(run_dir))
            configs[run_dir] = flat
            swept |= keys
        def family(flat: dict) -> str:
            return digest({k: v for k, v in flat.items() if compared(k, swept)})
        families = group["run_dir"].map(lambda d: family(configs[d]))
        main = families.value_counts().index[0]
        kept.append(group[families == main])
        odd = group[families != main].copy()
        if len(odd):
            reference = configs[group[families == main]["run_dir"].iloc[0]]
            odd["reason"] = [
                "config differs from its siblings in " + ", ".join(sorted(
                    k for k in set(reference) | set(configs[d])
                    if reference.get(k) != configs[d].get(k) and compared(k, swept))[:5])
                for d in odd["run_dir"]]
            flagged.append(odd)
    empty = runs.iloc[0:0]
    return (pd.concat(kept) if kept else empty), (pd.concat(flagged) if flagged else empty.assign(reason=[]))
