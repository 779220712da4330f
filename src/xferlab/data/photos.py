"""`dataset=photos`: crops of the natural photographs bundled with scikit-image, the offline
stand-in for ImageNet (RGB, unlabelled), used to pretrain the `synth_photos` backbone."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import skimage.data
from skimage.transform import resize

from xferlab.data.sources import BuiltSource
from xferlab.data.store import StoreWriter
from xferlab.runtime.progress import track

log = logging.getLogger(__name__)

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field")


class PhotosSource(BuiltSource):
    def __init__(self, name: str = "photos", n_crops: int = 4000, size: int = 64, scale: tuple = (0.12, 0.6),
                 seed: int = 0):
        self.name = name
        self.spec = {"source": "skimage_photos", "photos": list(PHOTOS), "n_crops": int(n_crops), "size": int(size),
                     "scale": [float(v) for v in scale], "seed": int(seed), "skimage": skimage.__version__}

    def build(self, path: Path) -> None:
        spec = self.spec
        rng = np.random.default_rng(spec["seed"])
        photos = [getattr(skimage.data, name)() for name in PHOTOS]
        size, rows, crops = spec["size"], [], []
        for i in track(range(spec["n_crops"]), spec["n_crops"], "crop photos", unit="img"):
            k = int(rng.integers(len(photos)))
            photo = photos[k]
            side = int(min(photo.shape[:2]) * rng.uniform(*spec["scale"]))
            y = int(rng.integers(0, photo.shape[0] - side + 1))
            x = int(rng.integers(0, photo.shape[1] - side + 1))
            crop = resize(photo[y : y + side, x : x + side], (size, size), anti_aliasing=True, preserve_range=True)
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            crops.append(np.clip(np.round(crop), 0, 255).astype(np.uint8).transpose(2, 0, 1))
            rows.append({"sample_id": f"{PHOTOS[k]}-{i:05d}", "target": PHOTOS[k], "label": -1,
                         "crop_y": y + side // 2, "crop_x": x + side // 2})
        images = np.stack(crops)
        with StoreWriter(path, n_samples=len(images), channel_names=("red", "green", "blue"), image_size=(size, size),
                         dtype="uint8", classes=(), attrs={"source": spec, "label_rule": "none"}) as writer:
            writer.append(images)
            writer.write_samples(pd.DataFrame(rows))
