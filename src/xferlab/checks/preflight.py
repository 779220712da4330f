"""The check before any job starts: every input every job of a run or sweep needs is there.

A Hydra callback (`hydra.callbacks.preflight`, set in conf/hydra/default.yaml, so for every run
and every sweep of `train`, `pretrain` and `prepare`). For a sweep it expands the sweep the way
Hydra's basic sweeper does (the experiment's `hydra.sweeper.params`, then the command line) and
composes the config of each job that differs in its inputs (not once per seed), so command-line
overrides such as `backbone.weights=...` count.

Per distinct backbone and dataset (`checks.inputs`): a weights file that is missing is
downloaded now when it is a public checkpoint, `backbone.download=auto` and downloads are allowed
(once, before the jobs, not once per job); a dataset's `root` / `csv` / `path` must exist, its
config must build, and what its importer would refuse must not show in the files' names and
headers (OpenCell FOVs: shape, channels, dtype; read from the TIFF headers, no pixels). Per job:
`preprocess.scale=match` needs both pixel sizes (the backbone's pretraining's, from its config or
checkpoint; the dataset's) and must not show whole fields only in part; a backbone whose checkpoint
lists the targets its pretraining saw must not be tested on them in the job's split. Every problem
is printed once, as a list (the file, key or value, and what to do), and the command exits with
status 1 before any job starts: no traceback and no run folder.

`missing_backbones=skip` (set by `experiment=zoo`): the backbones the experiment's sweep lists
(`hydra.sweeper.params.backbone`) whose weights are missing and cannot be fetched, or which cannot
run on the dataset for want of its pixel size or of channels their inputs need (named by
`input_checks.channel_problem`: e.g. SubCell's four-channel variant on nucleus + protein data), are taken out of the sweep before it is expanded, listed (where to get each) on the terminal and in
`<sweep dir>/not_run.txt` (which the report repeats); the others run. Everything else is checked
as always, and backbones chosen on the command line are never skipped. (The callback runs before
Hydra builds its sweeper from `hydra.sweeper.params`, so the sweep is the one left here.)
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from xferlab.checks.channels import channel_problem
from xferlab.checks.inputs import JobInputs, checkpoint_record, scale_problem, weights_check
from xferlab.runtime.settings import job_overrides

INPUT_NODES = ("backbone", "dataset", "paths")
SPLIT_KEYS = ("split_seed", "split", "allow_seen_test_targets")  # what decides the split a seen-target check draws
MISSING_MODES = ("fail", "skip")
NOT_RUN_FILE = "not_run.txt"


def input_overrides(overrides: list[list[str]], groups: set[str], splits: bool = False,
                    seed_splits: bool = False) -> list[list[str]]:
    """The distinct job override lists after dropping what cannot change a job's inputs: plain
    values outside `backbone`, `dataset` and `paths` (a seed, a learning rate). With `splits`, the
    keys that decide a job's split are kept too (`split_seed`, `split.*`, `allow_seen_test_targets`,
    and the seed when `seed_splits`: the split seed follows it). Config group choices are kept (an
    experiment may change the dataset)."""
    def matters(override: str) -> bool:
        key = override.split("=", 1)[0].lstrip("+~")
        top = key.split(".", 1)[0].split("@", 1)[0]
        split = splits and (top in SPLIT_KEYS or (seed_splits and top == "seed"))
        return top in groups or top in INPUT_NODES or split

    return [list(o) for o in dict.fromkeys(tuple(o for o in job if matters(o)) for job in overrides)]


def job_configs(config: DictConfig, multirun: bool, keep: str = "inputs",
                composed: dict[tuple[str, ...], DictConfig] | None = None) -> tuple[list[DictConfig], int]:
    """The configs that differ in what `keep` names (`inputs`; `splits`: or their split; `all`:
    every job), and the number of jobs. `composed` caches configs by override list across calls:
    composing is what takes the time (about half a second each on 2 cores)."""
    if not multirun:
        return [config], 1
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    overrides = job_overrides(config)
    if keep == "all":
        distinct = [list(o) for o in dict.fromkeys(tuple(job) for job in overrides)]
    else:
        seed_splits = OmegaConf.is_interpolation(config, "split_seed") if "split_seed" in config else False
        distinct = input_overrides(overrides, set(loader.list_groups("")), keep == "splits", seed_splits)
    cache = {} if composed is None else composed
    for o in distinct:
        if tuple(o) not in cache:
            cache[tuple(o)] = loader.load_sweep_config(config, o)
    return [cache[tuple(o)] for o in distinct], len(overrides)


def missing_inputs(jobs: list[DictConfig]) -> list[str]:
    """Every problem of these job configs, each once (`checks.inputs`)."""
    checks = JobInputs()
    for cfg in jobs:
        checks.check(cfg)
    return list(checks.problems)


def sweep_problems(config: DictConfig, multirun: bool) -> tuple[list[str], int]:
    """Every problem of the run or sweep, and its number of jobs. The jobs that differ in their
    inputs are composed and checked once each; only when a backbone's checkpoint lists the targets
    its pretraining saw, or a head is trained on a dataset imported from files, are the jobs that
    differ in their split composed for those checks, and only
    a pretraining that publishes its checkpoint composes every job (its config digest decides)."""
    checks = JobInputs()
    if not multirun:
        checks.check(config)
        return list(checks.problems), 1
    composed: dict[tuple[str, ...], DictConfig] = {}
    configs, n_jobs = job_configs(config, multirun, "inputs", composed)
    for cfg in configs:
        checks.inputs(cfg)
    if checks.any_seen or any(checks.draws_split(cfg) for cfg in configs):
        for cfg in job_configs(config, multirun, "splits", composed)[0]:
            checks.seen(cfg)
            checks.split(cfg)
    if OmegaConf.select(config, "publish", default=None):
        for cfg in job_configs(config, multirun, "all", composed)[0]:
            checks.publish(cfg)
    return list(checks.problems), n_jobs


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
    first = loader.load_sweep_config(config, first_job)
    dataset = OmegaConf.to_container(first.dataset, resolve=True)
    # a dataset imported from files tells its channels and pixel size from their names and headers;
    # if its files have problems, they are listed by the usual check after this one
    checks = JobInputs()
    source, geometry = checks.dataset(first.dataset, dataset)
    checks.problems.clear()
    channels = checks.channels_of(source)
    if geometry:  # whole fields shown in part under scale=match stay the usual check's error (with its choices)
        geometry = {**geometry, "whole_field": False}
    for name in names:
        job = loader.load_sweep_config(config, [*first_job, f"backbone={name}"])
        backbone = OmegaConf.to_container(job.backbone, resolve=True)
        problem = channel_problem(backbone, job.get("channels"), channels, str(dataset.get("name")))
        problem = problem or scale_problem(backbone, dataset, None, geometry)  # the dataset's pixel size: no weights needed
        if problem is None:
            problem, path = weights_check(backbone)
            record = {} if problem is None else None
            if problem is None and path is not None:
                problem, record = checkpoint_record(path, backbone)
            problem = problem or scale_problem(backbone, dataset, record, geometry)
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
    return (f"xferlab: cannot start ({jobs}, none launched); {len(problems)} problem{'s' if len(problems) != 1 else ''} "
            "with the jobs' inputs:\n- " + "\n- ".join(problems))


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
        problems, n_jobs = sweep_problems(config, multirun)
        if multirun:
            from xferlab.runtime.cluster_checks import slurm_problems

            problems += slurm_problems(config)
        if problems:
            raise SystemExit(report(problems, n_jobs))
        if skipped:
            print(not_run(skipped, config), file=sys.stderr, flush=True)
        if multirun:  # the console's first line; then one line per job (xferlab.train)
            from xferlab.runtime.console import sweep_line

            print(sweep_line(n_jobs, OmegaConf.select(config, "hydra.sweep.dir")), flush=True)
