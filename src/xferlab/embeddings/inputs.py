"""The backbone inputs themselves, for heads that train the backbone (`inputs = "images"`):
every image of the rows in a split, preprocessed and channel-mapped as extraction would feed it."""

from __future__ import annotations

import numpy as np
import torch

from xferlab.data.store import ImageStore, StoreError


def preprocessed_images(store: ImageStore, split: np.ndarray, preprocessor, adapter, batch: int = 256) -> np.ndarray:
    """Backbone inputs `(N, K, S, S)` for the rows in a split (other rows stay zero)."""
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
