"""One training job: image store -> cached embeddings -> head -> run directory.

`run_job(cfg)` is what `python -m xferlab.train` calls for each (multirun) job; tests call it
in-process on a composed config. Every result is written to the run directory first
(`metrics.json`, `predictions.csv`, `config.yaml`, `run_info.json`); W&B mirrors them.
"""

from __future__ import annotations

import logging
import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from xferlab import __version__
from xferlab.backbones.preprocess import Preprocessor
from xferlab.backbones.registry import Backbone
from xferlab.backbones.weights import state_dict_sha256
from xferlab.building import build
from xferlab.data.splits import TEST, TRAIN, VAL, grouped_split
from xferlab.data.store import ImageStore
from xferlab.embeddings.extractor import extract_embeddings
from xferlab.heads.classifier import HeadClassifier
from xferlab.heads.datamodule import EmbeddingDataModule
from xferlab.io import atomic_write_json, atomic_write_text
from xferlab.loggers import build_loggers
from xferlab.provenance import config_digest, git_revision, semantic_config

log = logging.getLogger(__name__)



@dataclass
class JobResult:
    metrics: dict[str, Any]
    run_dir: Path
    backbone: Backbone
    head: torch.nn.Module
    info: dict[str, Any] = field(default_factory=dict)


def class_weights(labels: np.ndarray, num_classes: int, rule: str) -> torch.Tensor | None:
    """`balanced`: inverse class frequency on the training labels (single-label), or the ratio of
    negatives to positives per class (multilabel `pos_weight`); 0 for a class absent from training."""
    if rule == "none":
        return None
    if rule != "balanced":
        raise ValueError(f"head.class_weights={rule!r}; choose 'none' or 'balanced'")
    if labels.ndim == 2:
        pos = labels.sum(axis=0).astype(np.float64)
        return torch.tensor(np.where(pos > 0, (len(labels) - pos) / np.maximum(pos, 1), 0.0), dtype=torch.float32)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def open_dataset(cfg: DictConfig) -> ImageStore:
    return build(cfg.dataset).open(cfg.paths.data_dir)


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


def run_job(cfg: DictConfig) -> JobResult:
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    store = open_dataset(cfg)
    backbone: Backbone = build(cfg.backbone)
    adapter = build(cfg.channels, dataset_channels=store.channel_names, model_channels=backbone.in_channels)
    preprocessor = Preprocessor.for_store(OmegaConf.to_container(cfg.backbone.preprocess), store)
    make_trainer = instantiate(cfg.trainer)

    def make_extract_trainer(**kwargs) -> L.Trainer:
        return make_trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                            enable_checkpointing=False, **kwargs)

    embeddings, extract_info = extract_embeddings(
        store, backbone, adapter, preprocessor, cfg.paths.cache_dir, make_extract_trainer,
        batch_size=cfg.extract.batch_size, num_workers=cfg.extract.num_workers,
        precision=cfg.extract.precision,
    )

    split = make_split(cfg, store)
    multilabel = store.label_sets is not None
    labels = store.label_sets.astype(np.int64) if multilabel else store.labels
    if cfg.seed is None:
        raise ValueError("seed=null: every job needs an integer seed (0 is fine)")
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)

    data = EmbeddingDataModule(embeddings, labels, split, batch_size=cfg.head.batch_size, seed=cfg.seed)
    num_classes = len(store.classes)
    head = instantiate(cfg.head.module, in_dim=embeddings.shape[1], num_classes=num_classes)
    if hasattr(head, "norm") and hasattr(head.norm, "fit"):
        head.norm.fit(data.train_features())
    head_sha_before = state_dict_sha256(head)
    model = HeadClassifier(
        head, store.classes, instantiate(cfg.head.optimizer),
        class_weights(labels[split == TRAIN], num_classes, cfg.head.class_weights),
        multilabel=multilabel,
    )

    names = {"backbone": backbone.name, "channels": adapter.name, "dataset": cfg.dataset.name,
             "head": cfg.head.name, "experiment": cfg.experiment_name}
    loggers, wandb_run = build_loggers(
        cfg.logger, run_dir=run_dir, group=cfg.experiment_name,
        name=f"{backbone.name}-{adapter.name}-s{cfg.seed}", job_type="train",
        tags=[f"{k}:{v}" for k, v in names.items() if k != "experiment"] + [f"seed:{cfg.seed}"],
        config=semantic_config(cfg),
    )
    try:
        checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val/macro_f1",
                                     mode="max", save_top_k=1, enable_version_counter=False)
        stopper = EarlyStopping(monitor="val/macro_f1", mode="max", patience=cfg.head.patience)
        trainer = make_trainer(max_epochs=cfg.head.max_epochs, callbacks=[checkpoint, stopper], logger=loggers,
                               enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
                               default_root_dir=str(run_dir))
        fit_start = time.perf_counter()
        trainer.fit(model, datamodule=data)
        fit_seconds = time.perf_counter() - fit_start
        tested = trainer.test(model, datamodule=data, ckpt_path="best", verbose=False)[0]

        metrics = {k: float(v) for k, v in sorted(tested.items())}
        metrics.update({
            "val/macro_f1": float(checkpoint.best_model_score),
            **names,
            "seed": int(cfg.seed),
            "split_seed": int(cfg.split_seed),
            "num_classes": num_classes,
            "n_train": int((split == TRAIN).sum()),
            "n_val": int((split == VAL).sum()),
            "n_test": int((split == TEST).sum()),
            "config_digest": config_digest(cfg),
            "git_revision": git_revision(),
            "data_fingerprint": store.fingerprint,
            "embedding_cache_key": extract_info["cache_key"],
            "weights_sha256": backbone.weights_sha256,
            "xferlab_version": __version__,
        })
        predictions = predictions_table(store, model)
        info = {
            **extract_info,
            "fit_seconds": fit_seconds,
            "total_seconds": time.perf_counter() - started,
            "epochs": int(trainer.current_epoch),
            "head_sha256_before": head_sha_before,
            "head_sha256_after": state_dict_sha256(head),
            "backbone_sha256_after": backbone.current_sha256(),
            "best_checkpoint": checkpoint.best_model_path,
            "host": platform.node(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "wandb_dir": None if wandb_run is None else str(wandb_run.dir),
        }
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        atomic_write_text(run_dir / "predictions.csv", predictions.to_csv(index=False))
        atomic_write_json(run_dir / "run_info.json", info)
        atomic_write_json(run_dir / "split_targets.json", split_targets(store, split))
        atomic_write_json(run_dir / "metrics.json", metrics)
        if wandb_run is not None:
            wandb_run.summary.update({k: v for k, v in metrics.items()})
        log.info("%s  test/macro_f1=%.4f  test/accuracy=%.4f  (%s)", wandb_name(names, cfg.seed),
                 metrics["test/macro_f1"], metrics["test/accuracy"], run_dir)
        return JobResult(metrics=metrics, run_dir=run_dir, backbone=backbone, head=head, info=info)
    finally:
        if wandb_run is not None:
            wandb_run.finish()


def split_targets(store: ImageStore, split: np.ndarray) -> dict[str, list[str]]:
    """The targets (groups) of each split, for audits of leakage and for later comparisons."""
    targets = store.samples["target"].to_numpy().astype(str)
    return {name: sorted(set(targets[split == code].tolist()))
            for code, name in ((TRAIN, "train"), (VAL, "val"), (TEST, "test"))}


def wandb_name(names: dict[str, Any], seed: int) -> str:
    return f"{names['backbone']}-{names['channels']}-s{seed}"


def predictions_table(store: ImageStore, model: HeadClassifier) -> pd.DataFrame:
    """Per test sample: ids, true label, prediction and every class score. Multilabel runs add
    the true and predicted sets (`labels`, `preds`: ';'-joined class names; threshold 0.5)."""
    rows = torch.cat(model.test_rows).numpy()
    scores = torch.cat(model.test_scores).numpy()
    samples = store.samples.iloc[rows]
    pred = scores.argmax(axis=1)
    table = pd.DataFrame({
        "sample_id": samples["sample_id"].to_numpy(),
        "target": samples["target"].to_numpy(),
        "label": samples["label"].to_numpy(),
        "label_name": [store.classes[i] for i in samples["label"].to_numpy()],
        "pred": pred,
        "pred_name": [store.classes[i] for i in pred],
    })
    if model.multilabel:
        names = np.array(store.classes)
        table["labels"] = [";".join(names[row > 0]) for row in store.label_sets[rows]]
        table["preds"] = [";".join(names[row > 0.5]) for row in scores]
    for k, name in enumerate(store.classes):
        table[f"score/{name}"] = scores[:, k]
    return table
