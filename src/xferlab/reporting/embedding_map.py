"""A 2-D map of each condition's test embeddings, coloured by class: what the head had to separate.
One run per condition (the first of its units: every seed of a condition reads the same cache
entry); its test split's rows of the embedding cache, at most `MAX_POINTS` of them (a seeded draw).

Methods: `umap` (umap-learn; seeded, so one thread and the same map every time), `tsne`
(scikit-learn), `pca` (scikit-learn: linear, instant); `none` skips the map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from xferlab.embeddings.export import ExportError, load_run

METHODS = ("umap", "tsne", "pca", "none")
MAX_POINTS = 2000


def project(X: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """`X` (rows x dimensions) in two dimensions. Neighbourhood sizes shrink for small test splits."""
    if len(X) < 3:
        raise ValueError(f"a 2-D map needs at least 3 points; got {len(X)}")
    if method == "umap":
        import warnings

        with warnings.catch_warnings():
            # umap imports numba's optional TBB layer and warns when it is absent; it falls back to its default
            warnings.filterwarnings("ignore", message=".*TBB.*")
            import umap

        return umap.UMAP(n_components=2, n_neighbors=min(15, len(X) - 1), random_state=seed, n_jobs=1).fit_transform(X)
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(n_components=2, perplexity=min(30.0, (len(X) - 1) / 3), random_state=seed, init="pca").fit_transform(X)
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(X)
    raise ValueError(f"embedding map method {method!r}: choose one of {METHODS}")


def held_out_rows(run_dir: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The test split's embeddings of a run and their class names (at most MAX_POINTS rows)."""
    emb = load_run(run_dir)
    if "split" not in emb.obs:
        raise ExportError(f"{run_dir}: no split_targets.json, so its test rows are unknown")
    test = emb.subset((emb.obs["split"] == "test").to_numpy())
    rows = np.arange(len(test.X))
    if len(rows) > MAX_POINTS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, MAX_POINTS, replace=False))
    return test.X[rows], test.obs["label_name"].to_numpy(str)[rows]


def condition_maps(table: pd.DataFrame, method: str, progress=None) -> tuple[dict[str, tuple], list[str]]:
    """{condition: (2-D points, class names)} and, for conditions without a map, why not."""
    maps, missing = {}, []
    for _, r in table.iterrows():
        run_dir = Path(r["_runs"].sort_values(["split_seed", "seed"] if "split_seed" in r["_runs"] else ["seed"])
                       ["run_dir"].iloc[0])
        try:
            X, classes = held_out_rows(run_dir)
            if len(X) < 3:
                raise ExportError(f"{run_dir}: {len(X)} test rows, too few to map")
        except (ExportError, FileNotFoundError) as err:
            missing.append(f"{r['condition']}: {err}")
            continue
        if progress is not None:
            progress.set_postfix_str(f"{method} {r['condition']}", refresh=True)
        maps[r["condition"]] = (project(X, method), classes)
    return maps, missing
