"""A PNG gallery of an image store: one row per class, a few crops each, as colour composites."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from xferlab.data.store import ImageStore
from xferlab.runtime.io import temp_sibling

# channel -> RGB colour of the composite
COLOURS = {"nucleus": (0.2, 0.4, 1.0), "protein": (0.1, 1.0, 0.2), "microtubules": (1.0, 0.2, 0.2),
           "red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0),
           "er": (1.0, 0.8, 0.0)}
DEFAULT_COLOURS = [(0.1, 1.0, 0.2), (0.2, 0.4, 1.0), (1.0, 0.2, 0.2), (1.0, 0.8, 0.0)]


def composite(image: np.ndarray, channels: list[str]) -> np.ndarray:
    """`(C, H, W)` -> `(H, W, 3)` uint8, each channel stretched between its 1st and 99.8th percentile."""
    out = np.zeros((*image.shape[1:], 3), dtype=np.float32)
    for i, (plane, name) in enumerate(zip(image.astype(np.float32), channels)):
        lo, hi = np.percentile(plane, [1, 99.8])
        scaled = np.clip((plane - lo) / max(hi - lo, 1e-6), 0, 1)
        out += scaled[..., None] * np.array(COLOURS.get(name, DEFAULT_COLOURS[i % 4]), dtype=np.float32)
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


def write_gallery(store: ImageStore, path: str | Path, per_class: int = 8, scale: int = 2,
                  channels: list[str] | None = None) -> Path:
    """One row per class (or, for an unlabelled store, rows of consecutive samples), `per_class`
    crops per row taken from distinct targets; written atomically."""
    path = Path(path)
    channels = channels or store.channel_names
    index = [store.channel_names.index(c) for c in channels]
    samples = store.samples
    rows: list[tuple[str, list[int]]] = []
    if store.classes:
        for k, name in enumerate(store.classes):
            members = samples[samples["label"] == k].drop_duplicates("target")
            rows.append((name, members.index[:per_class].tolist()))
    else:
        members = samples.drop_duplicates("target").index.tolist()
        if len(members) < 2 * per_class:  # few targets (e.g. a handful of photos): take samples as they come
            members = samples.index.tolist()
        for r in range(max(1, min(6, len(members) // per_class))):
            rows.append((f"samples {r * per_class}-", members[r * per_class : (r + 1) * per_class]))
    h, w = store.image_size
    tile_h, tile_w, label_w, pad = h * scale, w * scale, 130, 2
    canvas = Image.new("RGB", (label_w + per_class * (tile_w + pad), len(rows) * (tile_h + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (name, members) in enumerate(rows):
        y = r * (tile_h + pad)
        draw.text((4, y + tile_h // 2 - 6), name, fill="black")
        for c, i in enumerate(members):
            tile = composite(store.read(i, i + 1)[0][index], channels)
            img = Image.fromarray(tile).resize((tile_w, tile_h), Image.NEAREST)
            canvas.paste(img, (label_w + c * (tile_w + pad), y))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    canvas.save(tmp, format="PNG")
    tmp.replace(path)
    return path
