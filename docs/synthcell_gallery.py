"""Draw the README's SynthCell v2 figures:

- docs/synthcell_gallery.png: the evaluation domain (dataset=synthcell), one row per class, crops of
  distinct targets (nucleus blue, protein green);
- docs/synthcell_domain_shift.png: the same targets rendered at domain_shift 0, 0.25, 0.5, 0.75, 1
  (same random streams: only the domain moves);
- docs/synthcell_vs_real_nuclei.png: Hoechst crops that opencell_raw cuts from the real OpenCell fields
  in ../shared/data/ (top) above SynthCell's nucleus channel at the same 128 px (bottom).

    python docs/synthcell_gallery.py      (about 30 s on 2 cores)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from xferlab.data.gallery import composite, write_gallery  # noqa: E402
from xferlab.data.synthcell.domains import opencell_targets  # noqa: E402
from xferlab.data.synthcell.source import SynthCellSource, render_target  # noqa: E402

SHIFTS = (0.0, 0.25, 0.5, 0.75, 1.0)
SHIFT_TARGETS = ("TOMM20", "SEC61B", "GOLGA2", "FBL", "SRRM2", "H2BC12", "LMNB1", "ATP1A1")


def stretch(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [1, 99.8])
    return np.clip((image.astype(np.float64) - lo) / max(hi - lo, 1e-9), 0, 1)


def gallery(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SynthCellSource("synthcell", n_targets=None, labels={"rule": "single_grade3", "min_targets": 15}).open(tmp)
        write_gallery(store, out, per_class=10, scale=2)


def domain_shift(out: Path) -> None:
    by_name = {t.name: (i, t) for i, t in enumerate(opencell_targets())}
    rows = [by_name[n] for n in SHIFT_TARGETS if n in by_name]
    fig, axes = plt.subplots(len(rows), len(SHIFTS), figsize=(1.6 * len(SHIFTS) + 1, 1.6 * len(rows)))
    for r, (index, target) in enumerate(rows):
        for c, shift in enumerate(SHIFTS):
            crop = render_target((index, target, shift, ("nucleus", "protein"), 64, 1, 1, 0))[0]
            axes[r, c].imshow(composite(crop, ["nucleus", "protein"]))
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(f"shift {shift:g}", fontsize=8)
        main = max(target.mixture, key=lambda m: m[1])[0]
        axes[r, 0].set_ylabel(f"{target.name}\n{main}", fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def versus_real(out: Path) -> None:
    from tests.real_data import HOECHST_FOVS
    from xferlab.data.importers.common import resize_image, to_uint16
    from xferlab.data.importers.nuclei import segment_nuclei
    from xferlab.data.importers.opencell_raw import windows_inside

    import tifffile

    files = sorted(HOECHST_FOVS.glob("FOV_*_RAW.tif"))
    if not files:
        print(f"skipped {out.name}: no real Hoechst fields at {HOECHST_FOVS}")
        return
    real = []
    for f in files:
        image = np.asarray(tifffile.imread(f))
        centres = windows_inside(segment_nuclei(image).centres, image.shape, 200)
        for y, x in centres[:2]:
            crop = image[y - 100 : y + 100, x - 100 : x + 100]
            real.append(stretch(to_uint16(resize_image(crop[None], 128))[0]))
    targets = opencell_targets()
    synth = [stretch(render_target((i, targets[i], 0.0, ("nucleus", "protein"), 128, 1, 1, 0))[0, 0])
             for i in range(0, 8 * 97, 97)]
    n = min(len(real), len(synth), 8)
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.6))
    for k in range(n):
        axes[0, k].imshow(real[k], cmap="gray")
        axes[1, k].imshow(synth[k], cmap="gray")
        for ax in axes[:, k]:
            ax.axis("off")
    axes[0, 0].set_title("real OpenCell Hoechst crops (opencell_raw)", fontsize=8, loc="left")
    axes[1, 0].set_title("SynthCell v2 nucleus channel, 128 px", fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main() -> None:
    docs = REPO / "docs"
    gallery(docs / "synthcell_gallery.png")
    domain_shift(docs / "synthcell_domain_shift.png")
    versus_real(docs / "synthcell_vs_real_nuclei.png")
    print("wrote docs/synthcell_gallery.png, docs/synthcell_domain_shift.png, docs/synthcell_vs_real_nuclei.png")


if __name__ == "__main__":
    main()
