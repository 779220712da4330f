"""What a backbone sees of a stored image under `backbone.preprocess.scale=match`.

`match` resamples an image so that one pixel covers the micrometres one input pixel covered in the
backbone's pretraining. The resampled image is then fitted to the input (`fit`):
- `centre`: its central `input_size` square (or the image padded to it). A whole 211 um OpenCell
  field matched to 0.184 um per pixel is 1,146 px across: the centre shows 3.8 % of it.
- `tiles`: the fewest `input_size` squares covering it, evenly spaced (overlapping where the side
  is not a multiple of the input size); each is embedded and the embeddings are averaged, so the
  whole image is seen at its pretraining's scale, at the cost of one forward pass per tile.

One set of functions serves the extraction, the job's warnings and the check before the jobs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FITS = ("centre", "tiles")


def matched_side(image_px: int, pixel_size_um: float, pretrained_pixel_size_um: float) -> int:
    """The side (px) of an `image_px` image of `pixel_size_um` resampled to `pretrained_pixel_size_um`."""
    return max(1, int(round(image_px * (pixel_size_um / pretrained_pixel_size_um))))  # as Preprocessor.views


def tile_starts(side: int, size: int) -> list[int]:
    """Offsets of the fewest `size` windows covering `[0, side)`, evenly spaced from the first to the
    last possible one; `[0]` when the side fits in one window."""
    if side <= size:
        return [0]
    n = math.ceil(side / size)
    return [round(i * (side - size) / (n - 1)) for i in range(n)]


@dataclass(frozen=True)
class MatchedView:
    """One stored image as the backbone sees it under `scale=match`."""

    image_px: int                # stored image side
    pixel_size_um: float         # micrometres per stored pixel
    pretrained_pixel_size_um: float
    input_size: int
    fit: str

    @property
    def side(self) -> int:
        """The image's side after resampling to the pretraining's pixel size."""
        return matched_side(self.image_px, self.pixel_size_um, self.pretrained_pixel_size_um)

    @property
    def tiles(self) -> int:
        """Backbone inputs per image."""
        return len(tile_starts(self.side, self.input_size)) ** 2 if self.fit == "tiles" else 1

    @property
    def share(self) -> float:
        """The fraction of the image's area the backbone sees."""
        if self.fit == "tiles":
            return 1.0
        return min(1.0, self.input_size / self.side) ** 2

    @property
    def upsampling(self) -> float:
        """How many times finer than the stored pixels the input pixels are (> 1: interpolated detail)."""
        return self.pixel_size_um / self.pretrained_pixel_size_um

    def seen_um(self) -> float:
        """Micrometres per side of the part seen."""
        return min(self.side, self.input_size if self.fit == "centre" else self.side) * self.pretrained_pixel_size_um

    def describe(self) -> str:
        """In words: what of the image reaches the backbone."""
        image_um = self.image_px * self.pixel_size_um
        if self.fit == "tiles" and self.tiles > 1:
            per_side = int(round(math.sqrt(self.tiles)))
            return (f"the whole image ({image_um:.3g} um, resampled to {self.side} px at {self.pretrained_pixel_size_um:.3g} "
                    f"um) as {per_side} x {per_side} tiles of {self.input_size} px, their embeddings averaged")
        if self.share >= 1.0:
            return f"the whole image ({image_um:.3g} um, {self.side} px at {self.pretrained_pixel_size_um:.3g} um)"
        return (f"only the central {self.input_size} x {self.input_size} px of each image resampled to {self.side} px: "
                f"{self.seen_um():.3g} of its {image_um:.3g} um per side, {100 * self.share:.1f} % of its area")
