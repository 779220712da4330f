"""One pretraining run: the data it may see, the DINO module, checkpoints in DINO's layout,
resumption after an interruption, and a record of what was done.

Crash safety: one run per output folder at a time (a file lock); temporary files left there by a
killed run are removed at the start; checkpoints are written atomically (`AtomicCheckpointIO`);
`resume=true` continues from an intact `last.ckpt` (a damaged one is reported, moved aside and the
run starts over), `resume=<file>` from that file or not at all. The data order of each epoch is drawn
from (seed, epoch) and each sample's views from (seed, epoch, index), so a resumed run ends with the
same weights as one that never stopped."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from filelock import FileLock, Timeout
from lightning.pytorch.callbacks import Callback, Checkpoint
from omegaconf import DictConfig, OmegaConf

from xferlab import __version__
from xferlab.backbones.preprocess import Preprocessor
from xferlab.backbones.registry import create_model
from xferlab.runtime.building import build
from xferlab.runtime.checkpointing import AtomicCheckpointIO, resume_from
from xferlab.runtime.integrity import verification
from xferlab.runtime.io import atomic_write_json, atomic_write_text, replace_durably, temp_sibling
from xferlab.runtime.loggers import build_loggers
from xferlab.runtime.provenance import config_digest, git_revision, semantic_config
from xferlab.ssl.augment import MultiCrop
from xferlab.ssl.data import EpochShuffle, MultiCropDataset, load_rows, pretraining_rows, targets_seen
from xferlab.ssl.module import DINOModule
from xferlab.ssl.publish import publish, publish_problem

log = logging.getLogger(__name__)


class DinoCheckpoint(Callback):
    """After every epoch, write `checkpoint.pth` in DINO's layout (atomically and durably: written to a
    temporary name, fsynced, renamed, the folder fsynced)."""

    def __init__(self, path: Path, args: dict[str, Any], meta: dict[str, Any]):
        self.path, self.args, self.meta = path, args, meta

    def on_train_epoch_end(self, trainer, module: DINOModule) -> None:
        tmp = temp_sibling(self.path)
        try:
            with open(tmp, "wb") as f:
                torch.save(module.dino_checkpoint(self.args, self.meta), f)
                f.flush()
                os.fsync(f.fileno())
            replace_durably(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


class LastCheckpoint(Checkpoint):
    """After every epoch, `last.ckpt`: the whole training state, to resume from, written through the
    trainer's checkpoint IO (atomic). (`ModelCheckpoint(save_top_k=0, save_last=True)` writes
    `last.ckpt` only when it also writes a top-k file, so in Lightning 2.6 only at the very end: a
    run killed midway had nothing to resume from.) A `Checkpoint`, so it runs after the module's own
    epoch-end hook, like ModelCheckpoint. It also keeps the curves: every epoch's metrics."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.metrics: dict[str, float] = {}  # the last finished epoch's, saved in the checkpoint
        self.history: list[dict[str, float]] = []  # one entry per finished epoch

    def on_train_epoch_end(self, trainer, module) -> None:
        self.metrics = epoch_metrics(trainer.callback_metrics)
        self.history.append({"epoch": int(trainer.current_epoch) + 1,
                             **{k.removesuffix("_epoch"): round(v, 5) for k, v in self.metrics.items()}})
        trainer.save_checkpoint(self.path)

    # A run killed after its last checkpoint but before metrics.json has no epoch left to train when
    # resumed: it writes the metrics restored from the checkpoint.
    def state_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.metrics = dict(state.get("metrics", {}))
        self.history = list(state.get("history", []))


def epoch_metrics(callback_metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in callback_metrics.items() if not k.endswith("_step")}


class EpochSeed(Callback):
    def __init__(self, dataset: MultiCropDataset, sampler: EpochShuffle | None = None):
        self.dataset, self.sampler = dataset, sampler

    def on_train_epoch_start(self, trainer, module) -> None:
        self.dataset.epoch = int(trainer.current_epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(int(trainer.current_epoch))


def remove_stale_temp_files(out: Path) -> None:
    """Temporary files of atomic writes (`.<name>.tmp-<id>`, `.<name>.<id>.tmp`) in the output
    folder: the caller holds the folder's lock, so their writers are dead."""
    for tmp in sorted({*out.glob(".*.tmp-*"), *out.glob(".*.tmp")}):
        if tmp.is_file():
            log.warning("removing %s, left by an interrupted run", tmp)
            tmp.unlink(missing_ok=True)


def check_pretraining_backbone(bcfg: DictConfig) -> None:
    """Pretraining starts from the architecture's random initialisation (`init_seed`): a backbone
    config that names weights (`init=weights` / `hub`, or a `weights` file) would be ignored, so it
    is refused rather than silently dropped."""
    if bcfg.get("init") != "random" or bcfg.get("weights"):
        raise ValueError(f"backbone={bcfg.name} has init={bcfg.get('init')} and weights={bcfg.get('weights')}; "
                         "pretraining starts from random weights of the architecture (backbone.init=random, "
                         "backbone.weights=null): pick backbone=random, random_hpa, random_rgb or random_vits16")


def knn_monitor(cfg: DictConfig, store, prepare, train_rows: np.ndarray, val_rows: np.ndarray) -> dict | None:
    """The images of the kNN monitor (accuracy after every epoch). A labelled store is its own
    monitor (training images as memory, validation images as queries); an unlabelled one is watched
    on `monitor`, a labelled store (the evaluation domain), through the channel strategy
    `monitor_channels`, as evaluation will see it. None when neither is available."""
    s = cfg.ssl
    pick = np.random.default_rng(0)
    if len(val_rows):
        keep = np.sort(train_rows[pick.permutation(len(train_rows))[: s.knn_max_images]])
        return {"train_images": prepare(load_rows(store, keep)), "train_labels": torch.from_numpy(store.labels[keep]),
                "val_images": prepare(load_rows(store, val_rows)), "val_labels": torch.from_numpy(store.labels[val_rows]),
                "source": f"{cfg.dataset.name} (validation split {cfg.split_seed})"}
    if cfg.get("monitor") is None:
        return None
    target = build(cfg.monitor).open(cfg.paths.data_dir)
    bcfg = cfg.backbone
    adapter = build(cfg.monitor_channels, dataset_channels=target.channel_names, model_channels=list(bcfg.in_channels))
    if adapter.multi_view:
        raise ValueError(f"monitor_channels={cfg.monitor_channels.name}: the kNN monitor needs one view per image")
    rows, val = pretraining_rows(target, cfg.split.val, cfg.split.test, cfg.split_seed)
    if not len(val):
        raise ValueError(f"monitor={cfg.monitor.name}: the kNN monitor needs a labelled store")
    keep = np.sort(rows[pick.permutation(len(rows))[: s.knn_max_images]])
    target_prepare = Preprocessor.for_store(OmegaConf.to_container(bcfg.preprocess, resolve=True), target)

    def images(r: np.ndarray) -> torch.Tensor:
        return target_prepare(torch.from_numpy(load_rows(target, r).astype(np.float32)), adapter)

    return {"train_images": images(keep), "train_labels": torch.from_numpy(target.labels[keep]),
            "val_images": images(val), "val_labels": torch.from_numpy(target.labels[val]),
            "source": f"{cfg.monitor.name} (validation split {cfg.split_seed}, channels {adapter.name})"}


def run_pretraining(cfg: DictConfig) -> dict[str, Any]:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / ".pretrain.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RuntimeError(f"another pretraining run is writing to {out}; wait for it, or choose another name=") from None
    try:
        with verification(cfg.get("verify")):
            return _run_pretraining(cfg, out)
    finally:
        lock.release()


def _run_pretraining(cfg: DictConfig, out: Path) -> dict[str, Any]:
    start = time.perf_counter()
    remove_stale_temp_files(out)
    bcfg = cfg.backbone
    check_pretraining_backbone(bcfg)
    problem = publish_problem(cfg.get("publish"), config_digest(cfg))  # before any work, not after the training
    if problem:
        raise FileExistsError(problem)
    store = build(cfg.dataset).open(cfg.paths.data_dir)
    if len(bcfg.in_channels) != len(store.channel_names):
        raise ValueError(f"backbone.in_channels {list(bcfg.in_channels)} does not match the store's channels "
                         f"{store.channel_names}: pretraining feeds the store's channels as they are")
    use_unlabelled = bool(cfg.get("unlabelled", False))
    train_rows, val_rows = pretraining_rows(store, cfg.split.val, cfg.split.test, cfg.split_seed, use_unlabelled)
    if cfg.max_images is not None:
        train_rows = np.sort(np.random.default_rng(cfg.seed).permutation(train_rows)[: int(cfg.max_images)])
    # the backbone's own preprocessing (as at extraction), so pretraining and evaluation see the same intensities
    prepare = Preprocessor.for_store(OmegaConf.to_container(bcfg.preprocess, resolve=True), store).pretraining_inputs
    images = prepare(load_rows(store, train_rows))
    labelled = store.labels.max(initial=-1) >= 0
    log.info("pretraining on %d images of %s (%s)", len(images), store.path,
             "unlabelled store: all images" if not labelled else
             "training split and unlabelled targets" if use_unlabelled else "training split only")
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    s = cfg.ssl
    transform = MultiCrop(s.global_size, s.local_size, s.n_local, s.global_scale, s.local_scale)
    dataset = MultiCropDataset(images, transform, cfg.seed)
    sampler = EpochShuffle(len(dataset), cfg.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=s.batch_size, sampler=sampler, drop_last=True,
                                         num_workers=s.num_workers,
                                         collate_fn=lambda items: [torch.stack(v) for v in zip(*items)])
    knn = knn_monitor(cfg, store, prepare, train_rows, val_rows)
    model_kwargs = {**OmegaConf.to_container(bcfg.model_kwargs), "dynamic_img_size": True}
    backbone = create_model(bcfg.arch, len(bcfg.in_channels), model_kwargs, seed=bcfg.get("init_seed", 0))
    module = DINOModule(backbone, steps_per_epoch=len(loader), epochs=s.epochs, out_dim=s.out_dim,
                        head_hidden=s.head_hidden, bottleneck=s.bottleneck, lr=s.lr, min_lr=s.min_lr,
                        warmup_epochs=s.warmup_epochs, weight_decay=s.weight_decay,
                        weight_decay_end=s.weight_decay_end, momentum=s.momentum,
                        warmup_teacher_temp=s.warmup_teacher_temp, teacher_temp=s.teacher_temp,
                        teacher_temp_warmup_epochs=s.teacher_temp_warmup_epochs, student_temp=s.student_temp,
                        freeze_last_layer=s.freeze_last_layer, knn_k=s.knn_k, knn_data=knn,
                        head_bn=bool(s.head_bn))
    meta = {"name": cfg.name, "dataset": cfg.dataset.name, "data_fingerprint": store.fingerprint,
            "config_digest": config_digest(cfg), "git_revision": git_revision(), "xferlab_version": __version__,
            "arch": bcfg.arch, "model_kwargs": {k: v for k, v in model_kwargs.items() if k != "dynamic_img_size"},
            "in_channels": list(bcfg.in_channels), "n_images": int(len(images)),
            "split_seed": int(cfg.split_seed), "unlabelled": use_unlabelled,
            "seen": targets_seen(store, train_rows),  # every target pretraining saw (checked at evaluation)
            # the scale it was pretrained at: evaluation warns when far from it, and scale=match resamples to it
            "pixel_size_um": store.pixel_size_um, "input_size": int(s.global_size),
            "input_pixel_size_um": (None if store.pixel_size_um is None
                                    else store.pixel_size_um * store.image_size[1] / int(s.global_size))}
    args = {"arch": bcfg.arch, "out_dim": s.out_dim, "epochs": s.epochs, "batch_size_per_gpu": s.batch_size,
            "global_crops_size": s.global_size, "local_crops_number": s.n_local, "seed": cfg.seed}
    loggers, wandb_run = build_loggers(cfg.logger, run_dir=out, group=cfg.experiment_name, name=f"pretrain-{cfg.name}",
                                       job_type="pretrain", tags=[f"dataset:{cfg.dataset.name}", f"backbone:{cfg.name}"],
                                       config=semantic_config(cfg),
                                       # one CSV log per attempt: a resumed run must not overwrite the first one's
                                       csv_version=f"attempt{len(list((out / 'csv').glob('attempt*')))}")
    try:
        last = LastCheckpoint(out / "last.ckpt")
        trainer = build(cfg.trainer)(
            max_epochs=s.epochs, logger=loggers, gradient_clip_val=s.clip_grad, enable_progress_bar=False,
            enable_model_summary=False, log_every_n_steps=10, default_root_dir=str(out),
            callbacks=[EpochSeed(dataset, sampler), DinoCheckpoint(out / "checkpoint.pth", args, meta), last],
            plugins=[AtomicCheckpointIO()])
        trainer.fit(module, loader, ckpt_path=resume_from(cfg.resume, out / "last.ckpt"))
    finally:
        if wandb_run is not None:
            wandb_run.finish()
    # resumed from the last epoch's checkpoint, nothing is left to train: that epoch's metrics come from it
    metrics = {**last.metrics, **epoch_metrics(trainer.callback_metrics)}
    result = {**{k.removesuffix("_epoch"): v for k, v in metrics.items()}, "epochs": int(s.epochs),
              "out_dim": int(s.out_dim),
              "seconds": time.perf_counter() - start, "checkpoint": str(out / "checkpoint.pth"),
              "curves": last.history, "monitor": None if knn is None else knn["source"], **meta}
    if cfg.get("publish"):  # only now, complete: where backbone configs load from (`weights: <publish>`)
        result["published"] = str(publish(out / "checkpoint.pth", str(cfg.publish), meta["config_digest"]))
    atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    atomic_write_json(out / "metrics.json", result)
    return result
