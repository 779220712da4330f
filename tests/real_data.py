"""The real OpenCell Hoechst fields beside the clone (`../shared/data/opencell/hoechst-fovs/`):
read in place, never copied into the project; tests that need them skip, saying why, when absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
HOECHST_FOVS = REPO.parent / "shared" / "data" / "opencell" / "hoechst-fovs"


def hoechst_fields() -> dict[str, np.ndarray]:
    """File name -> (1024, 1024) uint16 Hoechst z-projection, for every real field there."""
    import tifffile

    files = sorted(HOECHST_FOVS.glob("FOV_*_RAW.tif"))
    if not files:
        pytest.skip(f"real OpenCell Hoechst fields not found at {HOECHST_FOVS} (a copy of shared/ beside the clone)")
    return {f.name: np.asarray(tifffile.imread(f)) for f in files}


def with_protein(fields: dict[str, np.ndarray], name: str) -> np.ndarray:
    """A (2, H, W) uint16 OpenCell-like FOV: the real Hoechst field `name` paired with another real
    field (the next one, shifted) standing in for the protein channel."""
    names = sorted(fields)
    other = fields[names[(names.index(name) + 1) % len(names)]]
    return np.stack([fields[name], np.roll(other, (37, 91), axis=(0, 1))]).astype(np.uint16)
