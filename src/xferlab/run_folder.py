"""What a job leaves behind: metrics with their provenance, predictions, split record, resolved
config and run info (each file written atomically, metrics.json last), and the W&B mirror."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from xferlab import __version__
from xferlab.data.splits import TEST, TRAIN, VAL
from xferlab.metrics import POSITIVE
from xferlab.runtime.io import atomic_write_json, atomic_write_text
from xferlab.runtime.provenance import config_digest, git_revision

if TYPE_CHECKING:
    from xferlab.backbones.registry import Backbone
    from xferlab.data.store import ImageStore


def provenance(cfg: DictConfig, names: dict[str, Any], store: ImageStore, backbone: Backbone, split: np.ndarray,
               extract_info: dict[str, Any], settings: dict[str, Any], samples: dict[str, Any]) -> dict[str, Any]:
    """What is saved beside every number in metrics.json (deterministic values only). `settings`:
    what the job's command line set, and the dataset's mode (`runtime.settings.job_settings`);
    `samples`: the summary of `samples_per_target`."""
    return {
        **names,
        "settings": settings,
        "seed": int(cfg.seed),
        "split_seed": int(cfg.split_seed),
        "pretrain_seed": getattr(backbone, "pretrain_seed", None),
        "label_fraction": float(cfg.get("label_fraction", 1.0)),
        "macro_f1_average_over": str(cfg.metrics.average_over),
        "features": backbone.features,
        "num_classes": len(store.classes),
        "n_train": int((split == TRAIN).sum()),
        "n_val": int((split == VAL).sum()),
        "n_test": int((split == TEST).sum()),
        "samples_per_target": samples,
        "config_digest": config_digest(cfg),
        "git_revision": git_revision(),
        "data_fingerprint": store.fingerprint,
        "embedding_cache_key": extract_info["cache_key"],
        # what the backbone saw: geometry (resize | match), intensity step, micrometres per input pixel
        **{k: extract_info.get(k) for k in ("preprocess_scale", "intensity", "input_pixel_size_um")},
        **{k: extract_info[k] for k in ("fit", "image_share_seen", "inputs_per_image") if k in extract_info},
        "weights_sha256": backbone.weights_sha256,
        "xferlab_version": __version__,
    }


def samples_per_target(store: ImageStore, split: np.ndarray) -> tuple[dict[str, Any], dict[str, int]]:
    """Samples (crops, or whole fields) per target among those the job's split uses: a summary
    (metrics.json) and each target's count (run_info.json; the report lists them)."""
    counts = store.samples.loc[np.asarray(split) >= 0, "target"].astype(str).value_counts().sort_index()
    if not len(counts):
        return {"targets": 0}, {}
    summary = {"targets": int(len(counts)), "min": int(counts.min()), "median": float(counts.median()),
               "max": int(counts.max())}
    return summary, {target: int(n) for target, n in counts.items()}


def write_results(cfg, run_dir: Path, store: ImageStore, split: np.ndarray, metrics: dict, predictions: pd.DataFrame,
                  info: dict) -> None:
    """Everything a run leaves, each file written atomically; metrics.json last (it marks the job done).
    A metrics.json left by an earlier run in this folder is removed first, so a failure part way
    (e.g. a full disk) never leaves it beside files of another run: metrics.json present means
    every file of its run is complete."""
    (run_dir / "metrics.json").unlink(missing_ok=True)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    atomic_write_text(run_dir / "predictions.csv", predictions.to_csv(index=False))
    atomic_write_json(run_dir / "run_info.json", info)
    atomic_write_json(run_dir / "split_targets.json", split_targets(store, split))
    atomic_write_json(run_dir / "metrics.json", metrics)


def mirror_to_wandb(run, metrics: dict[str, Any], predictions: pd.DataFrame, classes: list[str]) -> None:
    """Summary metrics, and the per-class F1 and confusion matrix as W&B tables."""
    import wandb

    run.summary.update(metrics)
    per_class = [[c, metrics.get(f"test/f1/{c}")] for c in classes]
    run.log({"test/per_class_f1": wandb.Table(columns=["class", "f1"], data=per_class)})
    counts = pd.crosstab(predictions["label_name"], predictions["pred_name"]).reindex(
        index=classes, columns=classes, fill_value=0)
    rows = [[t, p, int(counts.loc[t, p])] for t in classes for p in classes]
    run.log({"test/confusion": wandb.Table(columns=["true", "predicted", "count"], data=rows)})


def split_targets(store: ImageStore, split: np.ndarray) -> dict[str, list[str]]:
    """The targets (groups) of each split, for audits of leakage and for later comparisons."""
    targets = store.samples["target"].to_numpy().astype(str)
    return {name: sorted(set(targets[split == code].tolist()))
            for code, name in ((TRAIN, "train"), (VAL, "val"), (TEST, "test"))}


def predictions_table(store: ImageStore, rows: np.ndarray, scores: np.ndarray, multilabel: bool) -> pd.DataFrame:
    """Per test sample: ids, true label, prediction and every class score. Multilabel runs add
    the true and predicted sets (`labels`, `preds`: ';'-joined class names; threshold 0.5)."""
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
    if multilabel:
        names = np.array(store.classes)
        table["labels"] = [";".join(names[row >= POSITIVE]) for row in store.label_sets[rows]]
        table["preds"] = [";".join(names[row > 0.5]) for row in scores]
    for k, name in enumerate(store.classes):
        table[f"score/{name}"] = scores[:, k]
    return table
