"""What a backbone sees of a real OpenCell field under `scale=match` (`xferlab.backbones.geometry`)."""

from __future__ import annotations

import pytest
import torch

from tests.real_data import hoechst_fields, with_protein
from xferlab.backbones.geometry import MatchedView, matched_side, tile_starts
from xferlab.backbones.preprocess import Preprocessor

OPENCELL_UM = 0.206   # dataset=opencell_raw's pixel size
PRETRAINED_UM = 0.184  # experiment=opencell_dino's: 200 px crops of 0.206 um stored at 224 px, global crops of 224


def test_tile_starts_are_the_fewest_evenly_spaced_windows_covering_the_side():
    assert tile_starts(224, 224) == [0] and tile_starts(100, 224) == [0]
    assert tile_starts(448, 224) == [0, 224]
    assert tile_starts(1146, 224) == [0, 184, 369, 553, 738, 922]
    for side in range(225, 2000, 37):
        starts = tile_starts(side, 224)
        assert starts[0] == 0 and starts[-1] + 224 == side and len(starts) == -(-side // 224)
        assert all(b - a <= 224 for a, b in zip(starts, starts[1:]))  # no gap


@pytest.mark.parametrize("stored", [1024, 128])
def test_a_whole_field_matched_to_the_opencell_dino(stored):
    """A 1024 px field of 0.206 um (211 um) at the OpenCell DINO's 0.184 um is 1146 px: the centre
    shows 3.8 % of it, 36 tiles all of it, whatever size the field was stored at."""
    pixel = OPENCELL_UM * 1024 / stored
    assert matched_side(stored, pixel, PRETRAINED_UM) == 1146
    centre = MatchedView(stored, pixel, PRETRAINED_UM, 224, "centre")
    assert centre.tiles == 1 and centre.share == pytest.approx((224 / 1146) ** 2) and round(100 * centre.share, 1) == 3.8
    assert centre.seen_um() == pytest.approx(41.2, abs=0.05)
    tiles = MatchedView(stored, pixel, PRETRAINED_UM, 224, "tiles")
    assert tiles.tiles == 36 and tiles.share == 1.0 and "as 6 x 6 tiles of 224 px" in tiles.describe()
    assert tiles.upsampling == pytest.approx(pixel / PRETRAINED_UM)


class FieldStore:
    def __init__(self, field, pixel_size_um):
        self.images, self.pixel_size_um, self.path = field[None], pixel_size_um, "field.zarr"
        self.channel_mean, self.channel_std = field.mean(axis=(1, 2)), field.std(axis=(1, 2))
        self.channel_names = ["nucleus", "protein"]


def test_every_pixel_of_a_real_field_reaches_the_backbone_with_tiles():
    """On a real OpenCell field (1024 px, 0.206 um) matched to 0.184 um: the tiles, put back at
    their offsets, are the whole resampled field; the centre is 224 of its 1146 px per side."""
    fields = hoechst_fields()
    field = with_protein(fields, sorted(fields)[0])
    x = torch.from_numpy(field[None].astype("float32"))
    config = {"input_size": 224, "normalize": "zscore", "scale": "match", "pretrained_pixel_size_um": PRETRAINED_UM}
    tiled = Preprocessor.for_store({**config, "fit": "tiles"}, FieldStore(field, OPENCELL_UM))
    (views,) = tiled.views(x, lambda v: [v])
    whole = Preprocessor(None, "zscore").intensities(torch.nn.functional.interpolate(
        x, size=(1146, 1146), mode="bilinear", antialias=True, align_corners=False))
    starts = tile_starts(1146, 224)
    assert views.shape == (36, 2, 224, 224)
    seen = torch.zeros(1146, 1146, dtype=torch.bool)
    for tile, (y, left) in zip(views, [(y, left) for y in starts for left in starts]):
        torch.testing.assert_close(tile, whole[0, :, y : y + 224, left : left + 224])
        seen[y : y + 224, left : left + 224] = True
    assert seen.all()
    centre = Preprocessor.for_store(config, FieldStore(field, OPENCELL_UM))(x, lambda v: v)
    torch.testing.assert_close(centre[0], whole[0, :, 461:685, 461:685])
