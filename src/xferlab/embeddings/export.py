"""Embeddings as an AnnData object (`.h5ad`), the format single-cell tools (scanpy, SubCell's own
exporter) read: the embeddings in `X` (samples x dimensions), the image store's sample table in
`obs` (indexed by sample id; for a run, also its split and the head's test predictions) and the
provenance in `uns["xferlab"]` (cache spec and key, image store, and for a run its metrics.json
provenance), as JSON strings so that every value survives the round trip.

Sources: an embedding cache entry (`outputs/cache/<key>.zarr`) or a run folder whose job used one
(its `run_info.json` names the entry)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import zarr

from xferlab import __version__
from xferlab.data.store import ImageStore
from xferlab.embeddings.cache import COMPLETE_MARKER, SOURCE, EmbeddingCache

SPLIT_NAMES = ("train", "val", "test")


class ExportError(ValueError):
    """The folder is not something embeddings can be exported from; the message says why and what to pass."""


@dataclass
class Embeddings:
    """Embeddings of every sample of an image store, with its sample table and provenance."""

    X: np.ndarray
    obs: pd.DataFrame
    provenance: dict[str, Any] = field(default_factory=dict)

    def subset(self, mask: np.ndarray) -> "Embeddings":
        return Embeddings(self.X[mask], self.obs.loc[mask], self.provenance)


def is_cache_entry(path: Path) -> bool:
    return (path / "zarr.json").exists() and (path / "embeddings").exists()


def load_cache_entry(entry: Path, store_path: Path | None = None) -> Embeddings:
    """An entry's embeddings (float32, NaN-checked as the job reads them) and the sample table of the
    image store it was computed from (its recorded path, or `store_path`)."""
    entry = Path(entry)
    if not is_cache_entry(entry):
        raise ExportError(f"{entry} is not an embedding cache entry (no zarr.json and embeddings array); pass a "
                          "cache entry (outputs/cache/<key>.zarr) or a run folder (one with run_info.json)")
    if not (entry / COMPLETE_MARKER).exists():
        raise ExportError(f"{entry} is an incomplete cache entry (no {COMPLETE_MARKER} marker): its build was "
                          "interrupted; run the job again to build it")
    attrs = dict(zarr.open_group(entry, mode="r").attrs)
    spec = attrs.get("spec")
    if not isinstance(spec, dict):
        raise ExportError(f"{entry}: no cache spec in its attributes; it was not written by xferlab's cache")
    cache = EmbeddingCache(entry.parent, {k: v for k, v in spec.items() if k != "cache_format"})
    if cache.path.name != entry.name:
        raise ExportError(f"{entry}: its spec digests to key {cache.key}, not {entry.stem}; the entry was renamed "
                          "or edited, so its provenance cannot be trusted")
    X = cache.load()
    source = attrs.get(SOURCE) or {}
    recorded = source.get("store")
    if store_path is None:
        if not recorded:
            raise ExportError(f"{entry} does not record the image store it was computed from; pass it with --store")
        store_path = Path(recorded)
    if not Path(store_path).exists():
        raise ExportError(f"{entry} was computed from the image store {store_path}, which is not there; pass its "
                          "current location with --store")
    store = ImageStore(store_path)
    if store.images_fingerprint != spec.get("images_fingerprint"):
        raise ExportError(f"{entry} was computed from images with fingerprint {spec.get('images_fingerprint')}, "
                          f"but {store_path} holds {store.images_fingerprint}: pass the store it was computed from "
                          "with --store")
    if len(store) != len(X):
        raise ExportError(f"{entry} holds {len(X)} rows but {store_path} has {len(store)} samples")
    obs = store.samples.copy()
    obs["label_name"] = [store.classes[i] if 0 <= i < len(store.classes) else "unlabelled" for i in store.labels]
    obs.index = obs["sample_id"].astype(str).to_numpy()
    obs.index.name = None
    provenance = {"cache_key": cache.key, "cache_spec": spec, "cache_entry": str(entry.resolve()),
                  "image_store": str(Path(store_path).resolve()), "store_fingerprint": store.fingerprint,
                  "classes": list(store.classes), "channel_names": list(store.channel_names),
                  "xferlab_version": __version__}
    return Embeddings(X, obs, provenance)


def run_cache_entry(run_dir: Path) -> Path:
    """The cache entry a run's job read its embeddings from (from its run_info.json)."""
    info_path = run_dir / "run_info.json"
    if not info_path.exists():
        raise ExportError(f"{run_dir} is neither a cache entry nor a run folder (no run_info.json); pass a run "
                          "folder of a finished job or outputs/cache/<key>.zarr")
    info = json.loads(info_path.read_text())
    if not info.get("cache_path"):
        raise ExportError(f"{info_path}: the job used no embedding cache (head={info.get('head', '?')} trains on "
                          "images), so there are no embeddings to export")
    entry = Path(info["cache_path"])
    if not entry.is_absolute() and not entry.exists():
        raise ExportError(f"{info_path} names the cache entry {entry}, relative to the folder the job ran in; run "
                          "from that folder, or pass the entry itself (python -m xferlab.export <cache dir>/"
                          f"{entry.name})")
    return entry


def load_run(run_dir: Path, store_path: Path | None = None) -> Embeddings:
    """A run's embeddings (every sample of its store) with its split (`split`: train / val / test /
    unused, by target, from split_targets.json) and the head's test prediction (`pred_name`, empty
    outside the test split) in `obs`, and its metrics.json provenance in `provenance["run"]`."""
    run_dir = Path(run_dir)
    emb = load_cache_entry(run_cache_entry(run_dir), store_path)
    split_path = run_dir / "split_targets.json"
    if split_path.exists():
        targets = json.loads(split_path.read_text())
        split = pd.Series("unused", index=emb.obs.index, dtype=object)
        for name in SPLIT_NAMES:
            split[emb.obs["target"].astype(str).isin(set(targets.get(name, []))).to_numpy()] = name
        emb.obs["split"] = split
    predictions = run_dir / "predictions.csv"
    if predictions.exists():
        pred = pd.read_csv(predictions, usecols=["sample_id", "pred_name"]).set_index("sample_id")["pred_name"]
        emb.obs["pred_name"] = emb.obs.index.map(pred.astype(str)).fillna("")
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    emb.provenance["run_dir"] = str(run_dir.resolve())
    emb.provenance["run"] = {k: v for k, v in metrics.items() if "/" not in k}  # provenance, not scores
    return emb


def load(path: Path, store_path: Path | None = None) -> Embeddings:
    path = Path(path)
    if not path.exists():
        raise ExportError(f"{path} does not exist; pass a run folder or an embedding cache entry")
    return load_cache_entry(path, store_path) if is_cache_entry(path) else load_run(path, store_path)


def to_anndata(emb: Embeddings):
    import anndata

    obs = emb.obs.copy()
    # plain object strings: pandas' string dtype is written only by anndata >= 0.11 (and only when opted in)
    obs.index = pd.Index(obs.index.astype(str), dtype=object)
    for column in obs.columns:
        if not pd.api.types.is_numeric_dtype(obs[column]):
            obs[column] = obs[column].astype(str).astype(object)
    for column in ("label_name", "split", "pred_name", "target"):
        if column in obs:
            values = obs[column].to_numpy(object)
            obs[column] = pd.Categorical(values, categories=pd.Index(sorted(set(values)), dtype=object))
    uns = {"xferlab": {key: json.dumps(value, sort_keys=True, default=str) if isinstance(value, (dict, list))
                       else str(value) for key, value in emb.provenance.items()}}
    var = pd.DataFrame(index=pd.Index([f"dim_{i}" for i in range(emb.X.shape[1])], dtype=object))
    return anndata.AnnData(X=emb.X, obs=obs, var=var, uns=uns)
