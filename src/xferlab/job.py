"""One training job: check the config, then image store -> embeddings (or images) -> head -> run dir.

`run_job(cfg)` is what `python -m xferlab.train` calls for each (multirun) job; tests call it
in-process on a composed config. `check_config` runs first and refuses every incompatibility it
can see before any store is built or image read. Every head answers the protocol of
`xferlab.heads.base`; `xferlab.metrics` turns its test scores into every number; the results go to
the run directory first (`metrics.json`, `predictions.csv`, `config.yaml`, `run_info.json`) and
W&B mirrors them.
"""

from __future__ import annotations

import json
import logging
import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from xferlab import metrics
from xferlab.backbones.channel_agnostic import with_dataset_channels
from xferlab.backbones.preprocess import Preprocessor, with_checkpoint_scale
from xferlab.backbones.registry import Backbone
from xferlab.data.labels import MULTILABEL_RULES
from xferlab.data.leakage import check_pretraining_overlap
from xferlab.data.splits import check_class_coverage, check_label_fraction, store_split, subsample_training
from xferlab.data.store import ImageStore
from xferlab.embeddings.extractor import extract_embeddings
from xferlab.embeddings.inputs import preprocessed_images
from xferlab.heads.base import IMAGES, Head, HeadData
from xferlab.runtime.building import build
from xferlab.runtime.integrity import verification
from xferlab.runtime.loggers import BACKBONE_KEY, build_loggers, log_final
from xferlab.runtime.provenance import config_digest, semantic_config
from xferlab.run_folder import mirror_to_wandb, predictions_table, provenance, samples_per_target, write_results
from xferlab.runtime.settings import hydra_sweep, job_name, job_settings
from xferlab.runtime.slurm_tasks import JobTasks, job_tasks, joined

log = logging.getLogger(__name__)

# Lightning warns, on any machine where `srun` exists (a cluster's login node, this project's test
# machines), that a job not started by srun is not on SLURM. xferlab's jobs run on SLURM through
# hydra/launcher=slurm (srun included) or locally on purpose: the line is noise on a sweep's console.
warnings.filterwarnings("ignore", message="The `srun` command is available on your system but is not used")


@dataclass
class JobResult:
    metrics: dict[str, Any]
    run_dir: Path
    backbone: Backbone | None
    head: torch.nn.Module | None
    info: dict[str, Any] = field(default_factory=dict)
    name: str = ""  # the job's name (runtime.settings.job_name), also its W&B run's

    @property
    def helper_task(self) -> int | None:
        """The SLURM task number of a task that only helped extract (task 0 writes the results)."""
        return self.info.get("helper_task")


@dataclass
class JobInputs:
    """What a head trains on: the store, the backbone and channel adapter, each row's features
    (cached embeddings, or preprocessed images), labels and split."""

    store: ImageStore
    backbone: Backbone
    adapter: Any
    features: np.ndarray | None  # None in a SLURM task other than 0, which only helps extract
    labels: np.ndarray  # class indices (N,), or rows (N, K) of multi-hot values or grade weights (multilabel)
    split: np.ndarray
    multilabel: bool
    extract_info: dict[str, Any]
    make_trainer: Any  # the configured Trainer, partial


def check_config(cfg: DictConfig) -> Head:
    """Every check that needs no store and no image, before any work; returns the built head."""
    if cfg.seed is None or isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
        raise ValueError(f"seed={cfg.seed}: every job needs an integer seed (0 is fine)")
    metrics.check_average_over(str(cfg.metrics.average_over))
    check_label_fraction(float(cfg.label_fraction))
    head: Head = build(cfg.head)
    rule = OmegaConf.select(cfg, "dataset.labels.rule")
    head.check(multilabel=rule in MULTILABEL_RULES, multi_view=bool(get_class(cfg.channels._target_).multi_view))
    return head


def run_job(cfg: DictConfig) -> JobResult:
    head = check_config(cfg)
    with verification(cfg.get("verify")), joined(job_tasks()) as tasks:
        return _run_job(cfg, head, tasks)


def finished_result(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """The metrics of a finished run of this very config in `run_dir`, if there is one."""
    path = run_dir / "metrics.json"
    if cfg.get("force", False) or not path.exists():
        return None
    try:
        done = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return done if done.get("config_digest") == config_digest(cfg) else None


def load_inputs(cfg: DictConfig, head: Head, tasks: JobTasks | None = None) -> JobInputs:
    """Open (or build) the store, build the backbone and adapter, draw the split (with
    `label_fraction`) and get the features the head asks for (cached embeddings, or images).
    `tasks`: the job's SLURM tasks when it runs as several (`xferlab.runtime.slurm_tasks`)."""
    store: ImageStore = build(cfg.dataset).open(cfg.paths.data_dir)
    backbone_cfg = with_dataset_channels(cfg.backbone, store.channel_names)  # channel-agnostic: all of them
    backbone: Backbone = build(backbone_cfg)
    adapter = build(cfg.channels, dataset_channels=store.channel_names, model_channels=backbone.in_channels)
    multilabel = store.label_sets is not None
    head.check(multilabel=multilabel, multi_view=adapter.multi_view)  # for stores whose config names no rule
    labels = store.label_sets.astype(np.float32) if multilabel else store.labels
    split = store_split(store.samples, store.labels, where=f"{store.path} (label rule {store.label_rule!r})",
                        source=cfg.split.source, val=cfg.split.val, test=cfg.split.test, seed=cfg.split_seed)
    split = subsample_training(split, store.samples["target"].to_numpy(), store.labels, float(cfg.label_fraction),
                               cfg.split_seed)
    check_pretraining_overlap(backbone.name, backbone.pretraining, store, split,
                              allow=bool(cfg.allow_seen_test_targets))
    check_class_coverage(split, labels, store.classes, str(store.path))

    preprocess = with_checkpoint_scale(OmegaConf.to_container(backbone_cfg.preprocess), backbone.pretraining)
    preprocessor = Preprocessor.for_store(preprocess, store)
    make_trainer = instantiate(cfg.trainer)
    if head.inputs == IMAGES:
        features, extract_info = preprocessed_images(store, split, preprocessor, adapter), {"cache_key": None}
    else:
        features, extract_info = extract_embeddings(
            store, backbone, adapter, preprocessor, cfg.paths.cache_dir,
            lambda **kw: make_trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                                      enable_checkpointing=False, **kw),
            tasks=tasks, **OmegaConf.to_container(cfg.extract))
    extract_info = {**extract_info, "preprocess_scale": preprocessor.scale, "intensity": preprocessor.intensity,
                    "input_pixel_size_um": preprocessor.input_pixel_size_um(store.image_size[1])}
    view = preprocessor.matched_view(store.image_size[1])
    if view is not None:  # scale=match: how much of each image the backbone saw, and in how many inputs
        extract_info.update(fit=view.fit, image_share_seen=round(view.share, 4), inputs_per_image=view.tiles)
    return JobInputs(store=store, backbone=backbone, adapter=adapter, features=features, labels=labels, split=split,
                     multilabel=multilabel, extract_info=extract_info, make_trainer=make_trainer)


def _run_job(cfg: DictConfig, head: Head, tasks: JobTasks | None = None) -> JobResult:
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    overrides, swept = hydra_sweep(cfg)
    settings = job_settings(cfg, overrides)
    run_name = job_name(cfg, settings, swept)
    done = finished_result(cfg, run_dir)
    if done is not None:
        log.info("skipping %s: metrics.json with the same config digest exists (force=true reruns)", run_dir)
        return JobResult(metrics=done, run_dir=run_dir, backbone=None, head=None, info={"skipped": True},
                         name=run_name)

    helper = tasks is not None and not tasks.leader
    inputs = None if helper and head.inputs == IMAGES else load_inputs(cfg, head, tasks)
    if helper:  # it helped extract (if there was anything to extract); task 0 does the rest
        return JobResult(metrics={}, run_dir=run_dir, backbone=None, head=None, name=run_name,
                         info={"helper_task": tasks.rank, **({} if inputs is None else inputs.extract_info)})
    store, backbone, labels, split, multilabel = (inputs.store, inputs.backbone, inputs.labels, inputs.split,
                                                  inputs.multilabel)
    names = {"backbone": backbone.name, "channels": inputs.adapter.name, "dataset": cfg.dataset.name,
             "head": head.name, "experiment": cfg.experiment_name}
    loggers, wandb_run = build_loggers(
        cfg.logger, run_dir=run_dir, group=cfg.experiment_name, name=run_name, job_type="train",
        tags=[f"{k}:{v}" for k, v in names.items() if k != "experiment"] + [f"seed:{cfg.seed}"],
        config={**semantic_config(cfg), BACKBONE_KEY: backbone.name})
    try:
        fit = head.fit(HeadData(features=inputs.features, labels=labels, split=split, classes=store.classes,
                                multilabel=multilabel, seed=int(cfg.seed), average_over=str(cfg.metrics.average_over),
                                make_trainer=inputs.make_trainer, loggers=loggers, run_dir=run_dir, backbone=backbone))
        scores = metrics.score(labels[fit.rows], fit.scores, classes=store.classes, multilabel=multilabel,
                               average_over=str(cfg.metrics.average_over),
                               groups=store.samples["target"].to_numpy()[fit.rows])
        if multilabel and fit.val_scores is not None:  # per-class thresholds chosen on validation
            scores.update(metrics.tuned(labels[fit.rows], fit.scores, labels[fit.val_rows], fit.val_scores,
                                        classes=store.classes, average_over=str(cfg.metrics.average_over)))
        log_final(loggers, scores)
        samples, per_target = samples_per_target(store, split)
        results = {**scores, **fit.selection,
                   **provenance(cfg, names, store, backbone, split, inputs.extract_info, settings, samples)}
        predictions = predictions_table(store, fit.rows, fit.scores, multilabel=multilabel)
        info = {**inputs.extract_info, **fit.info, "total_seconds": time.perf_counter() - started,
                "samples_per_target": per_target,
                "backbone_sha256_after": backbone.current_sha256(), "host": platform.node(),
                "torch": torch.__version__, "threads": torch.get_num_threads(),
                "wandb_dir": None if wandb_run is None else str(wandb_run.dir)}
        write_results(cfg, run_dir, store, split, results, predictions, info)
        if wandb_run is not None:
            mirror_to_wandb(wandb_run, results, predictions, store.classes)
        log.info("%s  test/macro_f1=%.4f  test/accuracy=%.4f  (%s)", run_name, results["test/macro_f1"],
                 results["test/accuracy"], run_dir)
        return JobResult(metrics=results, run_dir=run_dir, backbone=backbone, head=fit.module, info=info,
                         name=run_name)
    finally:
        if wandb_run is not None:
            wandb_run.finish()
