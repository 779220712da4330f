"""The checks of a job's inputs that need no job: what the preflight (`checks.preflight`) runs on
every distinct input config of a run or sweep before any job starts.

Each check returns problems as messages (one line each, naming the file, key or value and the
fix) and raises nothing:
- weights: the file is there, or a public checkpoint is fetched now (once for the sweep); a hub
  backbone is cached or downloads are allowed;
- dataset (one that names files): its `root` / `csv` / `path` exists, its config builds, and what
  its importer would refuse shows from the files' names and headers (`input_problems`; for OpenCell
  FOVs: shape, channel count and dtype of every FOV, unknown targets; for `dataset=fovs`: the
  table, missing files, readers, channel names, pixel sizes, dtypes, scenes, z planes), without
  reading a pixel;
- channels (`checks.channels`): the backbone's input slots can be filled from the
  dataset's channels by name (the channel strategy builds, and every channel
  `backbone.required_channels` names is there);
- scale: `backbone.preprocess.scale=match` knows both pixel sizes (the backbone's pretraining's,
  from its config or its checkpoint; the store's) and, on whole fields of view, does not silently
  show the backbone only their centre;
- seen targets: a backbone whose pretraining recorded the targets it saw is not tested on them.
  The split is drawn as the job draws it, from the store when it is built, otherwise from the
  targets the importer will store (`planned_samples`). The job checks again on the store itself;
- split: the split a job will draw (from the store, or from the targets the importer will store)
  leaves no labelled split empty: a class reaches train, val and test only from three targets on;
- publishing: a pretraining with `publish=<file>` would not replace a file it did not write.

`JobInputs` caches what several jobs share (a backbone's checkpoint record, a dataset's source),
so a sweep reads each file once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from xferlab.checks.channels import channel_problem, planned_channels

DATASET_INPUTS = ("root", "csv", "path", "table")
MIN_FIELD_SHARE = 0.9  # scale=match with fit=centre on whole fields showing less than this share of each is refused


def key_of(node: Any) -> str:
    return json.dumps(node, sort_keys=True, default=str)


# ---------------------------------------------------------------- weights

def weights_check(node: dict) -> tuple[str | None, Path | None]:
    """(problem, weights file): the file a backbone config names, fetched now when it is a public
    checkpoint and downloads are allowed; a hub backbone's cache."""
    from xferlab.backbones.resolve import resolve_weights
    from xferlab.backbones.weights import WeightsError

    init = node.get("init")
    try:
        if init == "weights":
            return None, resolve_weights(node.get("weights"), str(node.get("name")), str(node.get("download", "auto")))
        if init == "hub":
            return hub_problem(node), None
    except WeightsError as err:
        return str(err), None
    return None, None


def hub_problem(node: dict) -> str | None:
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


def checkpoint_record(path: Path, node: dict) -> tuple[str | None, dict]:
    """(problem, record): what xferlab's pretraining recorded in the weights file."""
    from xferlab.backbones.checkpoints import pretraining_record
    from xferlab.backbones.weights import WeightsError

    try:
        return None, pretraining_record(path, trust=bool(node.get("trust_checkpoint")))
    except WeightsError as err:
        return f"backbone={node.get('name')}: {err}", {}


# ---------------------------------------------------------------- dataset

def dataset_path_problems(node: dict) -> list[str]:
    problems = []
    for key in DATASET_INPUTS:
        if key in node:
            value = node[key]
            if not value or not Path(str(value)).expanduser().exists():
                problems.append(f"dataset={node.get('name')}: dataset.{key}={value} does not exist; point it at the "
                                "real data (see docs/reproducing.md, 'Reproduce the study on real data')")
    return problems


def build_source(node: DictConfig) -> tuple[Any, list[str]]:
    """(source, problems): the dataset source the config builds (its constructor checks the config)
    and what its importer would refuse, from file names and headers."""
    from xferlab.runtime.building import build

    try:
        source = build(node)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        return None, [str(err)]
    return source, list(getattr(source, "input_problems", lambda: [])())


def planned(source: Any, what: str) -> Any:
    """`source.<what>()` (`planned_samples`, `planned_geometry`): what the import will write, told
    before it; None when the source cannot tell, or when its files are too broken to tell (their
    problems are listed by `input_problems`)."""
    from xferlab.data.importers.common import DataImportError

    try:
        return getattr(source, what, lambda: None)()
    except (DataImportError, FileNotFoundError):
        return None


def existing_store(source: Any, data_dir: str) -> Path | None:
    """The store a source opens when it is already there (built, or given as `dataset.path`)."""
    path = getattr(source, "store_path", None)
    if callable(path):
        candidate = path(data_dir)
    elif isinstance(getattr(source, "path", None), str):
        candidate = Path(source.path).expanduser()
    else:
        return None
    return candidate if candidate.exists() else None


# ---------------------------------------------------------------- scale=match

def pretrained_pixel_size(backbone: dict, record: dict) -> float | None:
    configured = (backbone.get("preprocess") or {}).get("pretrained_pixel_size_um")
    return configured if configured is not None else record.get("input_pixel_size_um")


def scale_problem(backbone: dict, dataset: dict, record: dict | None, geometry: dict | None) -> str | None:
    """`scale=match` resamples the store to the backbone's pretraining pixel size: both must be
    known, and on whole fields `fit=centre` must not drop most of each field. `record`: the
    checkpoint's record (None when the weights could not be read: nothing to say yet)."""
    pre = backbone.get("preprocess") or {}
    if pre.get("scale") != "match":
        return None
    name = backbone.get("name")
    pixel = geometry.get("pixel_size_um") if geometry else dataset.get("pixel_size_um")
    if pixel is None and not dataset.get("path"):  # a stored dataset (`path`) may record its own
        known = pre.get("pretrained_pixel_size_um")
        return (f"backbone={name} resamples images to the {f'{known} um pixels' if known is not None else 'pixel size'} "
                f"of its pretraining (backbone.preprocess.scale=match), but dataset={dataset.get('name')} declares no "
                "pixel size: set dataset.pixel_size_um=<micrometres per pixel>, or backbone.preprocess.scale=resize")
    if record is None:
        return None
    pretrained = pretrained_pixel_size(backbone, record)
    if pretrained is None:
        source = "its checkpoint" if backbone.get("init") == "weights" else f"backbone.init={backbone.get('init')}"
        return (f"backbone={name} resamples images to the pixel size of its pretraining (backbone.preprocess.scale="
                f"match), but neither backbone.preprocess.pretrained_pixel_size_um nor {source} gives one: set "
                "backbone.preprocess.pretrained_pixel_size_um=<micrometres per input pixel in its pretraining>, or "
                "backbone.preprocess.scale=resize")
    if pre.get("input_size") is None:
        return (f"backbone={name}: backbone.preprocess.scale=match needs backbone.preprocess.input_size (the side "
                "of the square the resampled image is fitted to)")
    if geometry and geometry.get("whole_field") and pixel is not None:
        return whole_field_problem(name, dataset, geometry, float(pretrained), int(pre["input_size"]),
                                   str(pre.get("fit") or "centre"))
    return None


def whole_field_problem(name: str, dataset: dict, geometry: dict, pretrained: float, input_size: int,
                        fit: str) -> str | None:
    """Whole fields matched with fit=centre: the backbone would see only their centre."""
    from xferlab.backbones.geometry import MatchedView

    view = MatchedView(int(geometry["image_size"]), float(geometry["pixel_size_um"]), pretrained, input_size, fit)
    if fit != "centre" or view.share >= MIN_FIELD_SHARE:
        return None
    tiles = MatchedView(view.image_px, view.pixel_size_um, pretrained, input_size, "tiles")
    field_um = view.image_px * view.pixel_size_um
    resized = field_um / input_size
    return (f"backbone={name}: backbone.preprocess.scale=match on whole fields (dataset={dataset.get('name')} "
            f"mode=fov) would show it {view.describe()}. Choose: backbone.preprocess.fit=tiles (the whole field at "
            f"{pretrained:.3g} um per pixel as {tiles.tiles} tiles of {input_size} px, their embeddings averaged; "
            f"{tiles.tiles}x the extraction time), backbone.preprocess.scale=resize (the whole field in one "
            f"{input_size} px input, as the study did: {resized:.3g} um per input pixel, {resized / pretrained:.2g}x "
            "its pretraining's), or dataset.mode=crops")


# ---------------------------------------------------------------- seen targets

def split_table(source: Any, node: DictConfig, data_dir: str):
    """(samples, labels, where) the split is drawn from: the built store's, or the importer's
    planned table; None when neither exists before the import (or its files are too broken to tell)."""
    from xferlab.data.importers.common import DataImportError

    try:
        path = existing_store(source, data_dir)
    except (DataImportError, FileNotFoundError):
        return None
    if path is not None:
        from xferlab.data.store import ImageStore

        store = ImageStore(path)
        return store.samples, store.labels, str(store.path)
    planned_table = planned(source, "planned_samples")
    if planned_table is None:
        return None
    return (planned_table, planned_table["label"].to_numpy(),
            f"dataset={node.get('name')} (not imported yet: split drawn from the targets its files will give)")


def job_split(cfg: DictConfig, samples, labels, where: str) -> np.ndarray:
    """The split the job will draw from this table (`split.*`, `split_seed`); ValueError when it cannot."""
    from xferlab.data.splits import store_split

    return store_split(samples, labels, where=where, source=str(OmegaConf.select(cfg, "split.source", default="computed")),
                       val=float(cfg.split.val), test=float(cfg.split.test), seed=cfg.split_seed)


def seen_problem(cfg: DictConfig, backbone: dict, record: dict, table) -> str | None:
    """Test targets of the job's split that the backbone's pretraining saw (the job's own check,
    made before any job)."""
    from xferlab.data.leakage import seen_targets_problem

    if not record.get("seen") or table is None or bool(OmegaConf.select(cfg, "allow_seen_test_targets", default=False)):
        return None
    samples, labels, where = table
    try:
        split = job_split(cfg, samples, labels, where)
    except ValueError as err:
        return str(err)
    return seen_targets_problem(str(backbone.get("name")), record, samples, split, where)


def split_problem(cfg: DictConfig, table) -> str | None:
    """A labelled split (train, val, test) the job's split would leave empty, said before any
    import or extraction: what the head would otherwise find only after them."""
    from xferlab.data.splits import SPLIT_NAMES

    if table is None or OmegaConf.select(cfg, "split", default=None) is None:
        return None
    samples, labels, where = table
    try:
        split = job_split(cfg, samples, labels, where)
    except ValueError as err:
        return f"{err} (dataset.labels.rule={OmegaConf.select(cfg, 'dataset.labels.rule', default='?')})"
    labelled = np.asarray(labels) >= 0
    empty = [name for code, name in SPLIT_NAMES.items() if not ((split == code) & labelled).any()]
    if not empty:
        return None
    targets = samples.loc[labelled, "target"].to_numpy() if "target" in samples.columns else np.arange(labelled.sum())
    per_class = pd.Series(targets).groupby(np.asarray(labels)[labelled]).nunique()
    few = int((per_class < 3).sum())
    return (f"{where}: the {' and '.join(empty)} split{'s' if len(empty) > 1 else ''} would be empty: "
            f"{len(set(targets.tolist()))} labelled target(s) in {len(per_class)} class(es), {few} of them with fewer "
            "than 3 targets (a class reaches train, val and test only from 3 targets on; targets are never split). "
            "Add targets (more folders under dataset.root, more groups in dataset.table), or change split.val / split.test "
            f"(now {cfg.split.val} / {cfg.split.test}); the job would stop there after importing and extracting")


# ---------------------------------------------------------------- every job

def job_digest(cfg: DictConfig) -> str:
    """The config digest the job will compute (`provenance.config_digest`), from the config the
    preflight sees: the keys that cannot change a number (and Hydra's, not resolvable yet) left out."""
    from xferlab.runtime.provenance import NON_SEMANTIC_KEYS, config_digest

    return config_digest(OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k not in NON_SEMANTIC_KEYS]))


class JobInputs:
    """The problems of a run's or sweep's jobs, each once; files shared by jobs are read once."""

    def __init__(self) -> None:
        self.problems: dict[str, None] = {}
        self.backbones: dict[str, tuple[bool, dict | None]] = {}  # key -> (usable, checkpoint record)
        self.datasets: dict[str, tuple[Any, dict | None]] = {}  # key -> (source or None, planned geometry)
        self.sources: dict[str, Any] = {}  # key -> dataset source (None: its config or files do not build)
        self.tables: dict[str, Any] = {}
        self.channel_names: dict[int, list[str] | None] = {}
        self.any_seen = False  # a backbone's checkpoint lists the targets its pretraining saw

    def add(self, *problems: str | None) -> None:
        self.problems.update(dict.fromkeys(p for p in problems if p))

    def backbone(self, node: dict) -> tuple[bool, dict | None]:
        key = key_of(node)
        if key not in self.backbones:
            problem, path = weights_check(node)
            record: dict | None = {} if problem is None else None
            if problem is None and path is not None:
                problem, record = checkpoint_record(path, node)
                record = None if problem else record
            self.add(problem)
            self.backbones[key] = (problem is None, record)
            self.any_seen = self.any_seen or bool((record or {}).get("seen"))
        return self.backbones[key]

    def dataset(self, node: DictConfig, plain: dict) -> tuple[Any, dict | None]:
        """(source, geometry) of a dataset whose config names files (`root` / `csv` / `path`): they
        exist, the config builds, the importer finds nothing to refuse in the names and headers (a
        bad FOV does not hide the other checks: the targets and the geometry come from the names
        and the first header). A dataset xferlab renders (SynthCell) is not built here: importing
        its renderer would cost a second, and it has no files to check."""
        key = key_of(plain)
        if key not in self.datasets:
            problems = dataset_path_problems(plain)
            self.add(*problems)
            self.datasets[key] = (None, None)
            if not problems and any(k in plain for k in DATASET_INPUTS):
                source = self.source(node, plain)
                self.datasets[key] = (source, None if source is None else planned(source, "planned_geometry"))
        return self.datasets[key]

    def source(self, node: DictConfig, plain: dict) -> Any:
        """The dataset's source (built once; its config problems and the files' problems added)."""
        key = key_of(plain)
        if key not in self.sources:
            source, problems = (None, []) if dataset_path_problems(plain) else build_source(node)
            self.add(*problems)
            self.sources[key] = source
        return self.sources[key]

    def check(self, cfg: DictConfig) -> None:
        """Every check of one job's config."""
        self.inputs(cfg)
        self.seen(cfg)
        self.split(cfg)
        self.publish(cfg)

    def table(self, cfg: DictConfig, dataset_node: DictConfig, dataset: dict):
        """The table the job's split is drawn from (the store's, or the importer's plan), once per
        dataset; None for a dataset that does not build."""
        source = self.source(dataset_node, dataset)
        if source is None:
            return None
        data_dir = str(OmegaConf.select(cfg, "paths.data_dir", default="."))
        key = key_of(dataset) + data_dir
        if key not in self.tables:
            self.tables[key] = split_table(source, dataset, data_dir)
        return self.tables[key]

    def draws_split(self, cfg: DictConfig) -> bool:
        """Whether the job trains a head on a dataset imported from files (the datasets xferlab
        renders have their targets by construction): its split is checked."""
        dataset = OmegaConf.select(cfg, "dataset", default=None)
        return (dataset is not None and OmegaConf.select(cfg, "head", default=None) is not None
                and any(k in dataset for k in DATASET_INPUTS))

    def split(self, cfg: DictConfig) -> None:
        """A labelled split the job would find empty."""
        if self.draws_split(cfg):
            _, dataset_node, dataset = self.nodes(cfg)
            self.add(split_problem(cfg, self.table(cfg, dataset_node, dataset)))

    def nodes(self, cfg: DictConfig) -> tuple[dict | None, DictConfig | None, dict | None]:
        backbone_node, dataset_node = (OmegaConf.select(cfg, g, default=None) for g in ("backbone", "dataset"))
        backbone = None if backbone_node is None else OmegaConf.to_container(backbone_node, resolve=True)
        dataset = None if dataset_node is None else OmegaConf.to_container(dataset_node, resolve=True)
        return backbone, dataset_node, dataset

    def inputs(self, cfg: DictConfig) -> None:
        """The weights, the dataset, and scale=match between them."""
        backbone, dataset_node, dataset = self.nodes(cfg)
        usable_backbone, record = self.backbone(backbone) if backbone is not None else (False, None)
        source, geometry = self.dataset(dataset_node, dataset) if dataset is not None else (None, None)
        if backbone is not None and dataset is not None:
            self.add(scale_problem(backbone, dataset, record if usable_backbone else None, geometry))
            self.add(channel_problem(backbone, OmegaConf.select(cfg, "channels", default=None),
                                     self.channels_of(source), str(dataset.get("name"))))

    def channels_of(self, source: Any) -> list[str] | None:
        """The dataset's planned channel names (read once per source)."""
        if source is None:
            return None
        if id(source) not in self.channel_names:
            self.channel_names[id(source)] = planned_channels(source)
        return self.channel_names[id(source)]

    def seen(self, cfg: DictConfig) -> None:
        """Test targets of this job's split that its backbone's pretraining saw (needs the job's
        split keys: `split_seed`, `split.*`, `allow_seen_test_targets`)."""
        backbone, dataset_node, dataset = self.nodes(cfg)
        if backbone is None or dataset is None:
            return
        usable_backbone, record = self.backbone(backbone)
        if not (usable_backbone and record and record.get("seen")):
            return
        table = self.table(cfg, dataset_node, dataset)
        if table is not None:
            self.add(seen_problem(cfg, backbone, record, table))

    def publish(self, cfg: DictConfig) -> None:
        """A pretraining that would replace a file it did not write (needs the job's whole config)."""
        publish = OmegaConf.select(cfg, "publish", default=None)
        if publish:
            from xferlab.ssl.publish import publish_problem

            self.add(publish_problem(str(publish), job_digest(cfg)))
