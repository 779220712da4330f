"""The check before any job starts: every input every job of a run or sweep needs is there.

A Hydra callback (`hydra.callbacks.preflight`, set in conf/hydra/default.yaml, so for every run
and every sweep of `train`, `pretrain` and `prepare`). For a sweep it expands the sweep the way
Hydra's basic sweeper does (the experiment's `hydra.sweeper.params`, then the command line) and
composes the config of each job that differs in its inputs (not once per seed), so command-line
overrides such as `backbone.weights=...` count.

Per distinct backbone and dataset: a weights file that is missing is downloaded now when it is a
public checkpoint, `backbone.download=auto` and downloads are allowed (once, before the jobs,
not once per job); a dataset's `root` / `csv` / `path` must exist. Whatever is missing is printed
once, as a list (the file, where to get it, where to put it), and the command exits with status 1
before any job starts: no traceback and no run folder.

A backbone that resamples images to its pretraining's pixel size (`preprocess.scale=match`) needs
a dataset that declares its pixel size (`dataset.pixel_size_um`; a stored dataset may carry one).

`missing_backbones=skip` (set by `experiment=zoo`): the backbones the experiment's sweep lists
(`hydra.sweeper.params.backbone`) whose weights are missing and cannot be fetched, or which cannot
run on the dataset for want of its pixel size, are taken out of the sweep before it is expanded, listed (where to get each) on the terminal and in
`<sweep dir>/not_run.txt` (which the report repeats); the others run. Everything else is checked
as always, and backbones chosen on the command line are never skipped. (The callback runs before
Hydra builds its sweeper from `hydra.sweeper.params`, so the sweep is the one left here.)
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

DATASET_INPUTS = ("root", "csv", "path")
INPUT_NODES = ("backbone", "dataset", "paths")
MISSING_MODES = ("fail", "skip")
NOT_RUN_FILE = "not_run.txt"


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


def input_overrides(overrides: list[list[str]], groups: set[str]) -> list[list[str]]:
    """The distinct job override lists after dropping what cannot change a job's inputs: plain
    values outside `backbone`, `dataset` and `paths` (a seed, a learning rate). Config group
    choices are kept (an experiment may change the dataset)."""
    def matters(override: str) -> bool:
        key = override.split("=", 1)[0].lstrip("+~")
        top = key.split(".", 1)[0].split("@", 1)[0]
        return top in groups or top in INPUT_NODES

    return [list(o) for o in dict.fromkeys(tuple(o for o in job if matters(o)) for job in overrides)]


def job_configs(config: DictConfig, multirun: bool) -> tuple[list[DictConfig], int]:
    """The configs that differ in their inputs, and the number of jobs."""
    if not multirun:
        return [config], 1
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    overrides = job_overrides(config)
    distinct = input_overrides(overrides, set(loader.list_groups("")))
    return [loader.load_sweep_config(config, o) for o in distinct], len(overrides)


def _backbone_problem(node: Any) -> str | None:
    from xferlab.backbones.locations import resolve_weights
    from xferlab.backbones.weights import WeightsError

    init = node.get("init")
    try:
        if init == "weights":
            resolve_weights(node.get("weights"), str(node.get("name")), str(node.get("download", "auto")))
        elif init == "hub":
            return _hub_problem(node)
    except WeightsError as err:
        return str(err)
    return None


def _hub_problem(node: Any) -> str | None:
    """A hub backbone needs its weights in the Hugging Face cache unless downloads are allowed."""
    from xferlab.runtime.transfer import offline

    hub_id = node.get("hub_id")
    if not hub_id:
        return f"backbone={node.get('name')} with init=hub needs backbone.hub_id (e.g. vit_small_patch16_224.dino)"
    if not offline():
        return None
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(f"timm/{hub_id}", "model.safetensors"), str):
        return None
    return (f"backbone={node.get('name')}: timm/{hub_id} is not in the local Hugging Face cache and downloads are off "
            "(HF_HUB_OFFLINE=1). Run once with HF_HUB_OFFLINE=0, or download the weights file and use "
            "backbone.init=weights backbone.weights=/path/to/file")


def _scale_problem(backbone: dict, dataset: dict) -> str | None:
    """`scale=match` resamples the store to the backbone's pretraining pixel size: the dataset must
    declare its own (`dataset.pixel_size_um`), or be a stored one that may record it (`path`)."""
    pre = backbone.get("preprocess") or {}
    if pre.get("scale") != "match" or dataset.get("pixel_size_um") is not None or dataset.get("path"):
        return None
    return (f"backbone={backbone.get('name')} resamples images to the {pre.get('pretrained_pixel_size_um')} um pixels "
            f"of its pretraining (backbone.preprocess.scale=match), but dataset={dataset.get('name')} declares no "
            "pixel size: set dataset.pixel_size_um=<micrometres per pixel>, or backbone.preprocess.scale=resize")


def _dataset_problems(node: Any) -> list[str]:
    problems = []
    for key in DATASET_INPUTS:
        if key in node:
            value = node[key]
            if not value or not Path(str(value)).expanduser().exists():
                problems.append(f"dataset={node.get('name')}: dataset.{key}={value} does not exist; point it at the "
                                "real data (see the README, 'Reproduce the study on real data')")
    return problems


def missing_inputs(jobs: list[DictConfig]) -> list[str]:
    """What the jobs need and is not there (and could not be fetched), each problem once."""
    problems: dict[str, None] = {}
    seen: set[str] = set()
    for cfg in jobs:
        for group in ("backbone", "dataset"):
            node = OmegaConf.select(cfg, group, default=None)
            if node is None:
                continue
            plain = OmegaConf.to_container(node, resolve=True)
            key = group + json.dumps(plain, sort_keys=True, default=str)
            if key in seen:
                continue
            seen.add(key)
            found = [_backbone_problem(plain)] if group == "backbone" else _dataset_problems(plain)
            problems.update(dict.fromkeys(p for p in found if p))
        backbone, dataset = (OmegaConf.select(cfg, g, default=None) for g in ("backbone", "dataset"))
        if backbone is not None and dataset is not None:
            mismatch = _scale_problem(OmegaConf.to_container(backbone, resolve=True),
                                      OmegaConf.to_container(dataset, resolve=True))
            if mismatch:
                problems[mismatch] = None
    return list(problems)


def swept_backbones(config: DictConfig) -> list[str]:
    """The backbones the experiment's sweep lists, unless the command line chooses the backbone."""
    task = OmegaConf.select(config, "hydra.overrides.task", default=None) or []
    if any(o.split("=", 1)[0].lstrip("+~") == "backbone" for o in task):
        return []
    value = OmegaConf.select(config, "hydra.sweeper.params.backbone", default=None)
    return [v.strip() for v in str(value or "").split(",") if v.strip()]


def skip_missing_backbones(config: DictConfig) -> list[str]:
    """Take the swept backbones whose weights are missing (and cannot be fetched) out of the
    experiment's sweep; return what is missing for each."""
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import read_write

    loader = GlobalHydra.instance().config_loader()
    names = swept_backbones(config)
    if not names:
        return []
    first_job = [o for o in job_overrides(config)[0] if o.split("=", 1)[0] != "backbone"]
    present, problems = [], []
    for name in names:
        job = loader.load_sweep_config(config, [*first_job, f"backbone={name}"])
        backbone = OmegaConf.to_container(job.backbone, resolve=True)
        problem = _scale_problem(backbone, OmegaConf.to_container(job.dataset, resolve=True)) or \
            _backbone_problem(backbone)
        (problems.append(problem) if problem else present.append(name))
    if problems and not present:
        raise SystemExit(report(problems, 0))
    if problems:
        with read_write(config.hydra.sweeper.params):
            config.hydra.sweeper.params.backbone = ",".join(present)
    return problems


def not_run(problems: list[str], config: DictConfig) -> str:
    text = (f"{len(problems)} backbone{'s' if len(problems) != 1 else ''} of this experiment not run "
            "(missing_backbones=skip):\n- " + "\n- ".join(problems))
    folder = Path(str(config.hydra.sweep.dir))
    folder.mkdir(parents=True, exist_ok=True)
    from xferlab.runtime.io import atomic_write_text

    atomic_write_text(folder / NOT_RUN_FILE, text + "\n")
    return text


def report(problems: list[str], n_jobs: int) -> str:
    jobs = f"{n_jobs} job{'s' if n_jobs != 1 else ''}"
    return (f"xferlab: cannot start ({jobs}, none launched); missing input{'s' if len(problems) != 1 else ''}:\n- "
            + "\n- ".join(problems))


class Preflight(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._stop_on_error(config, multirun=True)

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._stop_on_error(config, multirun=False)

    @classmethod
    def _stop_on_error(cls, config: DictConfig, multirun: bool) -> None:
        """Hydra turns a callback's exception into a warning and carries on; a check that could
        not be made must stop the command instead."""
        try:
            cls._check(config, multirun)
        except (SystemExit, KeyboardInterrupt):
            raise
        except Exception as err:  # noqa: BLE001
            raise SystemExit(f"xferlab: the check of the jobs' inputs failed ({type(err).__name__}: {err}); "
                             "no job was launched") from err

    @staticmethod
    def _check(config: DictConfig, multirun: bool) -> None:
        mode = OmegaConf.select(config, "missing_backbones", default="fail")
        if mode not in MISSING_MODES:
            raise SystemExit(f"xferlab: missing_backbones={mode!r}; choose one of {MISSING_MODES}")
        skipped = skip_missing_backbones(config) if multirun and mode == "skip" else []
        configs, n_jobs = job_configs(config, multirun)
        problems = missing_inputs(configs)
        if problems:
            raise SystemExit(report(problems, n_jobs))
        if skipped:
            print(not_run(skipped, config), file=sys.stderr, flush=True)
