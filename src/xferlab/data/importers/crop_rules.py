"""Which nuclei of a field become crops.

- every single nucleus whose window lies inside the field (`max_per_field: null`, the default):
  the field's cells as the segmentation finds them, so a target gets as many crops as its fields
  have usable nuclei;
- at most `max_per_field`, spread over the field: a farthest-point selection that starts from a
  nucleus drawn with `seed` (and the field's name, so each field draws its own), then repeatedly
  takes the nucleus farthest from those chosen, skipping any whose window would share more than
  `max_overlap` of its area with a chosen window. Crops then cover the field's nuclei evenly
  instead of its top rows (raster order), and no two crops show mostly the same pixels.

The chosen centres are returned in raster order (the order the store lists them in).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

Centre = tuple[int, int]


@dataclass(frozen=True)
class CropRule:
    max_per_field: int | None = None  # None: every single nucleus with its window inside the field
    max_overlap: float = 0.5          # capped selection: most window area a crop may share with a chosen one
    seed: int = 0

    def __post_init__(self) -> None:
        m = self.max_per_field
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1):
            raise ValueError(f"dataset.max_crops_per_fov={m!r}: expected a positive integer, or null for every "
                             "single nucleus whose window lies inside the field")
        if isinstance(self.max_overlap, bool) or not isinstance(self.max_overlap, (int, float)) \
                or not 0 <= float(self.max_overlap) <= 1:
            raise ValueError(f"dataset.crop_overlap={self.max_overlap!r}: expected the largest share (0-1) of a crop "
                             "window that may overlap an already chosen one, e.g. 0.5")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise ValueError(f"dataset.crop_seed={self.seed!r}: expected an integer")

    def describe(self) -> dict[str, Any]:
        """The rule as the store records it (`source.crop_rule`)."""
        if self.max_per_field is None:
            return {"rule": "all_single_nuclei"}
        return {"rule": "farthest_point", "max_per_field": int(self.max_per_field),
                "max_overlap": float(self.max_overlap), "seed": int(self.seed)}

    def choose(self, centres: Sequence[Centre], crop_size: int, field: str) -> list[Centre]:
        """The crop centres of one field from its candidate centres (windows already inside)."""
        centres = list(centres)
        if self.max_per_field is None or len(centres) <= 1:
            return centres if self.max_per_field is None else centres[: self.max_per_field]
        rng = np.random.default_rng([int(self.seed), zlib.crc32(field.encode())])
        chosen = farthest_points(np.asarray(centres, dtype=np.float64), int(self.max_per_field), crop_size,
                                 float(self.max_overlap), int(rng.integers(len(centres))))
        return [centres[i] for i in sorted(chosen, key=lambda i: centres[i])]


def window_overlap(offsets: np.ndarray, size: int) -> np.ndarray:
    """Share of a `size` x `size` window's area covered by windows whose centres lie at `offsets`
    `(N, 2)` from its own."""
    sides = np.clip(size - np.abs(offsets), 0, None)
    return sides[:, 0] * sides[:, 1] / float(size * size)


def farthest_points(points: np.ndarray, n: int, size: int, max_overlap: float, first: int) -> list[int]:
    """Indices of up to `n` points: `first`, then each time the point farthest from those chosen
    whose window overlaps none of theirs by more than `max_overlap`."""
    chosen = [first]
    nearest = np.linalg.norm(points - points[first], axis=1)
    allowed = window_overlap(points - points[first], size) <= max_overlap
    allowed[first] = False
    while len(chosen) < n and allowed.any():
        pick = int(np.argmax(np.where(allowed, nearest, -1.0)))
        chosen.append(pick)
        nearest = np.minimum(nearest, np.linalg.norm(points - points[pick], axis=1))
        allowed &= window_overlap(points - points[pick], size) <= max_overlap
        allowed[pick] = False
    return chosen
