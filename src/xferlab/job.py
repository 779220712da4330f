"""One training job: image store -> cached embeddings -> head -> run directory.

`run_job(cfg)` is what `python -m xferlab.train` calls for each (multirun) job; tests call it
in-process on a composed config. Every result is written to the run directory first
(`metrics.json`, `predictions.csv`, `config.yaml`, `run_info.json`); W&B mirrors them.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import platform
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from xferlab.backbones.preprocess import Preprocessor, with_checkpoint_scale
from xferlab.backbones.registry import Backbone
from xferlab.backbones.weights import state_dict_sha256
from xferlab.runtime.building import build
from xferlab.runtime.checkpointing import AtomicCheckpointIO
from xferlab.runtime.integrity import verification
from xferlab.data.leakage import check_pretraining_overlap
from xferlab.data.splits import TEST, TRAIN, VAL, grouped_split
from xferlab.data.store import ImageStore, StoreError
from xferlab.embeddings.extractor import extract_embeddings
from xferlab.heads.datamodule import EmbeddingDataModule
from xferlab.heads.finetune import FinetuneClassifier
from xferlab.heads.scores import DEFAULT_AVERAGE_OVER, check_average_over, macro_f1_score
from xferlab.heads.training import HeadFit, class_weights, train_head
from xferlab.runtime.loggers import build_loggers
from xferlab.runtime.results import mirror_to_wandb, predictions_table, provenance, write_results
from xferlab.runtime.provenance import config_digest, semantic_config

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    metrics: dict[str, Any]
    run_dir: Path
    backbone: Backbone
    head: torch.nn.Module
    info: dict[str, Any] = field(default_factory=dict)


def open_dataset(cfg: DictConfig) -> ImageStore:
    return build(cfg.dataset).open(cfg.paths.data_dir)


def preprocessed_images(store: ImageStore, split: np.ndarray, preprocessor: Preprocessor, adapter,
                        batch: int = 256) -> np.ndarray:
    """Backbone inputs for the rows in a split (others stay zero), for fine-tuning."""
    rows = np.nonzero(split >= 0)[0]
    out = None
    for start in range(0, len(store), batch):
        stop = min(start + batch, len(store))
        wanted = rows[(rows >= start) & (rows < stop)]
        if len(wanted) == 0:
            continue
        images = store.read(start, stop)[wanted - start].astype(np.float32)
        x = preprocessor(torch.from_numpy(images), adapter).numpy()
        finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if not finite.all():
            rows_bad = wanted[~finite][:5].tolist()
            raise StoreError(f"{store.path}: row(s) {rows_bad} (sample id(s) "
                             f"{store.samples['sample_id'].iloc[rows_bad].tolist()}) give NaN or infinite backbone "
                             "inputs (NaN or infinite pixels); rebuild the store from fixed inputs")
        if out is None:
            out = np.zeros((len(store), *x.shape[1:]), dtype=np.float32)
        out[wanted] = x
    return out


def subsample_training(split: np.ndarray, store: ImageStore, fraction: float, seed: int) -> np.ndarray:
    """Keep `fraction` of each class's training targets (at least one), taken from a fixed,
    seeded order of the targets, so a smaller fraction is a subset of a larger one; the other
    training samples are left out (-1). Validation and test stay as they are."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label_fraction={fraction}: choose a value in (0, 1]")
    if fraction == 1:
        return split
    split = split.copy()
    targets = store.samples["target"].to_numpy().astype(str)
    labels = store.labels
    rng = np.random.default_rng([int(seed), 1])
    for cls in np.unique(labels[split == TRAIN]):
        members = np.array(sorted(set(targets[(split == TRAIN) & (labels == cls)])))
        order = members[rng.permutation(len(members))]
        keep = set(order[: max(1, math.ceil(fraction * len(order)))])
        drop = (split == TRAIN) & (labels == cls) & ~np.isin(targets, list(keep))
        split[drop] = -1
    return split


def make_split(cfg: DictConfig, store: ImageStore) -> np.ndarray:
    """`split.source=computed` (default): grouped by target, stratified, drawn from `split_seed`.
    `split.source=store`: the split the store was written with (its `split` column)."""
    source = cfg.split.get("source", "computed")
    if source == "store":
        if "split" not in store.samples.columns:
            raise ValueError(f"split.source=store but {store.path} has no `split` column; use split.source=computed")
        split = store.samples["split"].to_numpy().astype(np.int8)
        split[store.labels < 0] = -1
        return split
    if source != "computed":
        raise ValueError(f"split.source={source!r}; choose 'computed' or 'store'")
    if store.labels.max(initial=-1) < 0:
        raise ValueError(f"{store.path} has no labelled samples (label rule {store.label_rule!r}); "
                         "a classification head needs a labelled dataset")
    return grouped_split(store.samples["target"].to_numpy(), store.labels,
                         val=cfg.split.val, test=cfg.split.test, seed=cfg.split_seed)


def average_over(cfg: DictConfig) -> str:
    """`metrics.average_over`: which classes macro F1 averages over (`heads.scores`)."""
    return check_average_over(str(OmegaConf.select(cfg, "metrics.average_over", default=DEFAULT_AVERAGE_OVER)))


def check_class_coverage(split: np.ndarray, labels: np.ndarray, classes: list[str], where: str) -> None:
    """Every class scored on validation or test needs training samples. A single-label class with
    validation or test samples but none in training is an error (the head could never predict
    it); for multilabel data (a class may occur only beside a primary label) it is a warning.
    Classes with no labelled sample at all are logged: they are absent from every split."""
    multilabel = labels.ndim == 2
    def count(code: int) -> np.ndarray:
        rows = split == code
        if multilabel:
            return labels[rows].sum(axis=0)
        return np.bincount(labels[rows & (labels >= 0)], minlength=len(classes))
    train, val, test = count(TRAIN), count(VAL), count(TEST)
    untrained = [f"{c} (val {int(v)}, test {int(t)})" for c, n, v, t in zip(classes, train, val, test)
                 if n == 0 and v + t > 0]
    if untrained:
        message = (f"{where}: class(es) {untrained} have no training sample in this split, so the head cannot "
                   "learn them. With split.source=store fix the store's split column; with a computed split "
                   "lower split.val / split.test (a class needs 3 targets for one each in val and test); "
                   "with a label_fraction every class keeps at least one training target.")
        if not multilabel:
            raise ValueError(message)
        log.warning("%s", message)
    absent = [c for c, n, v, t in zip(classes, train, val, test) if n + v + t == 0]
    if absent:
        log.warning("%s: class(es) %s have no labelled sample in any split; they count as F1 0 under "
                    "metrics.average_over=all and are left out under present", where, absent)


def finished_result(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """The metrics of a finished run of this very config in `run_dir`, if there is one."""
    path = run_dir / "metrics.json"
    if cfg.get("force", False) or not path.exists():
        return None
    try:
        metrics = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return metrics if metrics.get("config_digest") == config_digest(cfg) else None


@dataclass
class JobInputs:
    """What a job's head trains on: the store, backbone and channel adapter, the rows' features
    (cached embeddings, or preprocessed images when fine-tuning), labels and split."""
    store: ImageStore
    backbone: Backbone
    adapter: Any
    features: np.ndarray
    labels: np.ndarray  # class indices (N,), or multi-hot rows (N, K) for multilabel stores
    split: np.ndarray
    multilabel: bool
    finetune: bool
    extract_info: dict[str, Any]
    make_trainer: Any  # the configured Trainer, partial


def load_inputs(cfg: DictConfig) -> JobInputs:
    """Open (or build) the store, build the backbone and adapter, draw the split (with
    `label_fraction`) and extract the embeddings through the cache."""
    store = open_dataset(cfg)
    backbone: Backbone = build(cfg.backbone)
    adapter = build(cfg.channels, dataset_channels=store.channel_names, model_channels=backbone.in_channels)
    preprocess = with_checkpoint_scale(OmegaConf.to_container(cfg.backbone.preprocess), backbone.pretraining)
    preprocessor = Preprocessor.for_store(preprocess, store)
    make_trainer = instantiate(cfg.trainer)

    def make_extract_trainer(**kwargs) -> L.Trainer:
        return make_trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                            enable_checkpointing=False, **kwargs)

    split = subsample_training(make_split(cfg, store), store, float(cfg.get("label_fraction", 1.0)), cfg.split_seed)
    check_pretraining_overlap(backbone.name, backbone.pretraining, store, split,
                              allow=bool(cfg.get("allow_seen_test_targets", False)))
    multilabel = store.label_sets is not None
    labels = store.label_sets.astype(np.int64) if multilabel else store.labels
    check_class_coverage(split, labels, store.classes, str(store.path))
    finetune = bool(OmegaConf.select(cfg, "finetune.enabled", default=False))
    if finetune:
        features, extract_info = preprocessed_images(store, split, preprocessor, adapter), {"cache_key": None}
    else:
        features, extract_info = extract_embeddings(
            store, backbone, adapter, preprocessor, cfg.paths.cache_dir, make_extract_trainer,
            **OmegaConf.to_container(cfg.extract),
        )
    extract_info = {**extract_info, "preprocess_scale": preprocessor.scale, "intensity": preprocessor.intensity,
                    "input_pixel_size_um": preprocessor.input_pixel_size_um(store.image_size[1])}
    return JobInputs(store=store, backbone=backbone, adapter=adapter, features=features, labels=labels, split=split,
                     multilabel=multilabel, finetune=finetune, extract_info=extract_info, make_trainer=make_trainer)


def run_job(cfg: DictConfig) -> JobResult:
    average_over(cfg)  # a bad value fails before any work
    with verification(cfg.get("verify")):
        return _run_job(cfg)


def _run_job(cfg: DictConfig) -> JobResult:
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    done = finished_result(cfg, run_dir)
    if done is not None:
        log.info("skipping %s: metrics.json with the same config digest exists (force=true reruns)", run_dir)
        return JobResult(metrics=done, run_dir=run_dir, backbone=None, head=None, info={"skipped": True})

    inputs = load_inputs(cfg)
    store, backbone, adapter = inputs.store, inputs.backbone, inputs.adapter
    embeddings, labels, split, multilabel = inputs.features, inputs.labels, inputs.split, inputs.multilabel
    extract_info, make_trainer = inputs.extract_info, inputs.make_trainer
    finetune = inputs.finetune
    if cfg.seed is None:
        raise ValueError("seed=null: every job needs an integer seed (0 is fine)")
    names = {"backbone": backbone.name, "channels": adapter.name, "dataset": cfg.dataset.name,
             "head": cfg.head.name, "experiment": cfg.experiment_name}
    if cfg.head.name == "knn":
        return run_knn(cfg, store, backbone, embeddings, split, names, extract_info, run_dir, started)
    if finetune and (multilabel or adapter.n_views != 1):
        raise ValueError("finetune.enabled=true supports single-label data and single-view channel strategies")
    loggers, wandb_run = build_loggers(
        cfg.logger, run_dir=run_dir, group=cfg.experiment_name,
        name=f"{backbone.name}-{adapter.name}-s{cfg.seed}", job_type="train",
        tags=[f"{k}:{v}" for k, v in names.items() if k != "experiment"] + [f"seed:{cfg.seed}"],
        config=semantic_config(cfg),
    )
    try:
        if finetune:
            fit = run_finetune(cfg, backbone, embeddings, labels, split, store.classes, make_trainer, loggers, run_dir)
        else:
            fit = train_head(cfg.head, embeddings, labels, split, store.classes, multilabel=multilabel,
                             seed=int(cfg.seed), make_trainer=make_trainer, logger=loggers, root_dir=run_dir,
                             average_over=average_over(cfg))
        metrics = {**fit.metrics, **provenance(cfg, names, store, backbone, split, extract_info)}
        predictions = predictions_table(store, fit.rows, fit.scores, multilabel=multilabel)
        info = {
            **extract_info,
            **fit.info,
            "total_seconds": time.perf_counter() - started,
            "backbone_sha256_after": backbone.current_sha256(),
            "host": platform.node(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "wandb_dir": None if wandb_run is None else str(wandb_run.dir),
        }
        write_results(cfg, run_dir, store, split, metrics, predictions, info)
        if wandb_run is not None:
            mirror_to_wandb(wandb_run, metrics, predictions, store.classes)
        log.info("%s  test/macro_f1=%.4f  test/accuracy=%.4f  (%s)", wandb_name(names, cfg.seed),
                 metrics["test/macro_f1"], metrics["test/accuracy"], run_dir)
        return JobResult(metrics=metrics, run_dir=run_dir, backbone=backbone, head=fit.head, info=info)
    finally:
        if wandb_run is not None:
            wandb_run.finish()


def run_finetune(cfg: DictConfig, backbone: Backbone, images: np.ndarray, labels: np.ndarray, split: np.ndarray,
                 class_names: list[str], make_trainer, loggers, run_dir: Path) -> HeadFit:
    """Fine-tuning: one head (`head.module`, learning rate `finetune.head_lr`) on a copy of the
    backbone, trained on preprocessed images; the best validation checkpoint (a file under
    `checkpoints/`) is tested once."""
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    started = time.perf_counter()
    data = EmbeddingDataModule(images, labels, split, batch_size=cfg.finetune.batch_size, seed=cfg.seed)
    head = instantiate(cfg.head.module, in_dim=backbone.embed_dim, num_classes=len(class_names))
    weights = class_weights(labels[split == TRAIN], len(class_names), cfg.head.class_weights)
    tuned = copy.deepcopy(backbone)
    if hasattr(head, "norm") and hasattr(head.norm, "fit"):
        with torch.no_grad():
            head.norm.fit(torch.cat([tuned(x) for x in data.train_features().split(256)]))
    optimizer = partial(instantiate(cfg.head.optimizer), lr=cfg.finetune.head_lr,
                        weight_decay=cfg.finetune.head_weight_decay)
    model = FinetuneClassifier(tuned, head, class_names, optimizer, backbone_lr=cfg.finetune.backbone_lr,
                               layer_decay=cfg.finetune.layer_decay, weight_decay=cfg.finetune.weight_decay,
                               class_weights=weights, average_over=average_over(cfg))
    head_sha_before = state_dict_sha256(head)
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val/macro_f1",
                                 mode="max", save_top_k=1, enable_version_counter=False)
    stopper = EarlyStopping(monitor="val/macro_f1", mode="max", patience=cfg.finetune.patience)
    trainer = make_trainer(max_epochs=cfg.finetune.max_epochs, callbacks=[checkpoint, stopper], logger=loggers,
                           enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
                           default_root_dir=str(run_dir), plugins=[AtomicCheckpointIO()])
    trainer.fit(model, datamodule=data)
    fit_seconds = time.perf_counter() - started
    tested = trainer.test(model, datamodule=data, ckpt_path="best", verbose=False)[0]
    metrics = {k: float(v) for k, v in sorted(tested.items())}
    metrics["val/macro_f1"] = float(checkpoint.best_model_score)
    info = {"fit_seconds": fit_seconds, "epochs": int(trainer.current_epoch), "head_sha256_before": head_sha_before,
            "head_sha256_after": state_dict_sha256(head), "best_checkpoint": checkpoint.best_model_path}
    return HeadFit(model=model, head=head, metrics=metrics, rows=torch.cat(model.test_rows).numpy(),
                   scores=torch.cat(model.test_scores).numpy(), info=info)


def run_knn(cfg, store: ImageStore, backbone: Backbone, embeddings: np.ndarray, split: np.ndarray,
            names: dict[str, Any], extract_info: dict[str, Any], run_dir: Path, started: float) -> JobResult:
    """kNN evaluation: every k scored on validation and test from one neighbour search; the k best
    on validation gives `test/macro_f1` (macro F1 over the classes `metrics.average_over` names)."""
    from sklearn.metrics import accuracy_score, f1_score

    from xferlab.heads.knn import knn_scores

    if store.label_sets is not None:
        raise ValueError("head=knn scores single-label data; this store is multilabel")
    labels, ks = store.labels, [int(k) for k in cfg.head.ks]
    train, val, test = (np.nonzero(split == code)[0] for code in (TRAIN, VAL, TEST))
    k_classes = len(store.classes)
    val_scores = knn_scores(embeddings[train], labels[train], embeddings[val], ks, k_classes)
    test_scores = knn_scores(embeddings[train], labels[train], embeddings[test], ks, k_classes)
    metrics: dict[str, Any] = {}
    for k in ks:
        for part, rows, scores in (("val", val, val_scores[k]), ("test", test, test_scores[k])):
            pred = scores.argmax(axis=1)
            metrics[f"knn/k={k}/{part}/macro_f1"] = macro_f1_score(labels[rows], pred, k_classes, average_over(cfg))
            metrics[f"knn/k={k}/{part}/accuracy"] = float(accuracy_score(labels[rows], pred))
    best_k = max(ks, key=lambda k: (metrics[f"knn/k={k}/val/macro_f1"], -k))
    pred = test_scores[best_k].argmax(axis=1)
    per_class = f1_score(labels[test], pred, average=None, labels=range(k_classes), zero_division=0)
    metrics.update({"knn_k": best_k, "val/macro_f1": metrics[f"knn/k={best_k}/val/macro_f1"],
                    "test/macro_f1": metrics[f"knn/k={best_k}/test/macro_f1"],
                    "test/accuracy": metrics[f"knn/k={best_k}/test/accuracy"],
                    **{f"test/f1/{c}": float(v) for c, v in zip(store.classes, per_class)},
                    **provenance(cfg, names, store, backbone, split, extract_info)})
    predictions = predictions_table(store, test, test_scores[best_k], multilabel=False)
    info = {**extract_info, "total_seconds": time.perf_counter() - started, "host": platform.node()}
    write_results(cfg, run_dir, store, split, metrics, predictions, info)
    log.info("%s  kNN k=%d  test/macro_f1=%.4f", wandb_name(names, cfg.seed), best_k, metrics["test/macro_f1"])
    return JobResult(metrics=metrics, run_dir=run_dir, backbone=backbone, head=None, info=info)


def wandb_name(names: dict[str, Any], seed: int) -> str:
    return f"{names['backbone']}-{names['channels']}-s{seed}"

