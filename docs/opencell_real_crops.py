"""Draw docs/opencell_real_crops.png: nucleus crops that `opencell_raw` (mode crops, default
segmentation) cuts from the four real OpenCell Hoechst fields in ../shared/data/opencell/hoechst-fovs/.

    python docs/opencell_real_crops.py

Each row: the field (nucleus outlines in red, the crop windows in yellow, the first eight crops'
centres numbered), then those eight crops as stored (200 px windows resized to 128 px)."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from skimage.segmentation import find_boundaries  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.real_data import hoechst_fields  # noqa: E402
from xferlab.data.importers.common import resize_image, to_uint16  # noqa: E402
from xferlab.data.importers.nuclei import segment_nuclei  # noqa: E402
from xferlab.data.importers.opencell_raw import windows_inside  # noqa: E402

CROP, SIZE, SHOWN = 200, 128, 8


def stretch(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [1, 99.8])
    return np.clip((image.astype(np.float64) - lo) / (hi - lo), 0, 1)


def main(out: Path = REPO / "docs" / "opencell_real_crops.png") -> None:
    fields = hoechst_fields()
    fig, axes = plt.subplots(len(fields), 1 + SHOWN, figsize=(2 * (1 + SHOWN) + 2, 2.3 * len(fields)),
                             gridspec_kw={"width_ratios": [2] + [1] * SHOWN})
    for row, (name, image) in zip(axes, sorted(fields.items())):
        nuclei = segment_nuclei(image)
        centres = windows_inside(nuclei.centres, image.shape, CROP)
        rgb = np.repeat(stretch(image)[..., None], 3, axis=2)
        rgb[find_boundaries(nuclei.labels)] = (1.0, 0.1, 0.1)
        row[0].imshow(rgb)
        for k, (y, x) in enumerate(centres):
            row[0].add_patch(plt.Rectangle((x - CROP // 2, y - CROP // 2), CROP, CROP, fill=False, lw=0.4,
                                           color="yellow", alpha=0.6))
            if k < SHOWN:
                row[0].text(x, y, str(k + 1), color="cyan", fontsize=7, ha="center", va="center")
        row[0].set_title(f"{name}: {len(nuclei.areas)} nuclei, {len(centres)} crops", fontsize=8)
        for k, ax in enumerate(row[1:]):
            if k < len(centres):
                y, x = centres[k]
                crop = image[y - CROP // 2 : y - CROP // 2 + CROP, x - CROP // 2 : x - CROP // 2 + CROP]
                ax.imshow(stretch(to_uint16(resize_image(crop[None], SIZE))[0]), cmap="gray")
                ax.set_title(str(k + 1), fontsize=7)
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
