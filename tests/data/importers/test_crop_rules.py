"""Crop rules: every single nucleus by default; with a cap, a seeded farthest-point selection
spread over the field with a limit on window overlap."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from xferlab.data.importers.crop_rules import CropRule, window_overlap

CROP = 200
FIELD = 1024


def lattice(step: int = 60, margin: int = 100) -> list[tuple[int, int]]:
    """Nuclei on a jittered lattice over a 1024 px field, in raster order (as segmentation lists them)."""
    rng = np.random.default_rng(0)
    points = [(int(y + rng.integers(-8, 9)), int(x + rng.integers(-8, 9)))
              for y in range(margin, FIELD - margin + 1, step) for x in range(margin, FIELD - margin + 1, step)]
    return sorted(points)


def max_pair_overlap(centres) -> float:
    if len(centres) < 2:
        return 0.0
    pairs = np.array([np.subtract(a, b) for a, b in itertools.combinations(centres, 2)], dtype=float)
    return float(window_overlap(pairs, CROP).max())


def test_default_takes_every_candidate_in_raster_order():
    centres = lattice()
    assert CropRule().choose(centres, CROP, "f") == centres
    assert CropRule().describe() == {"rule": "all_single_nuclei"}


def test_a_cap_spreads_the_crops_over_the_field_with_little_overlap():
    centres = lattice()
    rule = CropRule(10, max_overlap=0.5, seed=0)
    chosen = rule.choose(centres, CROP, "field-1")
    assert len(chosen) == 10 and set(chosen) <= set(centres) and chosen == sorted(chosen)
    assert max_pair_overlap(chosen) <= 0.5
    first = centres[:10]  # raster order: all from the top rows, windows mostly shared
    assert max_pair_overlap(first) > 0.5
    spread_rows, first_rows = np.ptp([c[0] for c in chosen]), np.ptp([c[0] for c in first])
    assert spread_rows > 0.6 * FIELD > first_rows
    mean_all = np.mean(centres, axis=0)
    assert np.abs(np.mean(chosen, axis=0) - mean_all).max() < 0.15 * FIELD
    assert np.abs(np.mean(first, axis=0) - mean_all).max() > 0.15 * FIELD
    assert rule.describe() == {"rule": "farthest_point", "max_per_field": 10, "max_overlap": 0.5, "seed": 0}


def test_the_selection_is_seeded_per_field_and_reproducible():
    centres = lattice()
    rule = CropRule(5, seed=3)
    assert rule.choose(centres, CROP, "a") == rule.choose(list(centres), CROP, "a")
    by_field = {tuple(rule.choose(centres, CROP, f"field-{i}")) for i in range(8)}
    by_seed = {tuple(CropRule(5, seed=s).choose(centres, CROP, "a")) for s in range(8)}
    assert len(by_field) > 1 and len(by_seed) > 1


def test_the_overlap_limit_can_leave_fewer_crops_than_the_cap():
    crowded = [(500 + 20 * i, 500) for i in range(10)]  # windows overlapping by 90 % and more
    chosen = CropRule(10, max_overlap=0.5).choose(crowded, CROP, "f")
    assert 1 <= len(chosen) < 10 and max_pair_overlap(chosen) <= 0.5
    assert len(CropRule(10, max_overlap=1.0).choose(crowded, CROP, "f")) == 10


def test_window_overlap_is_the_shared_share_of_a_window():
    offsets = np.array([[0, 0], [100, 0], [100, 100], [200, 0], [-50, 150]], dtype=float)
    np.testing.assert_allclose(window_overlap(offsets, 200), [1.0, 0.5, 0.25, 0.0, 0.75 * 0.25])


@pytest.mark.parametrize("kwargs,match", [
    ({"max_per_field": 0}, "max_crops_per_fov=0"),
    ({"max_per_field": 2.5}, "max_crops_per_fov=2.5"),
    ({"max_per_field": 3, "max_overlap": 1.5}, "crop_overlap=1.5"),
    ({"max_per_field": 3, "seed": "x"}, "crop_seed='x'"),
])
def test_bad_settings_name_the_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CropRule(**kwargs)


def test_on_real_fields_capped_crops_lie_where_the_fields_nuclei_lie():
    """The four real OpenCell Hoechst fields: with a cap of 10, the crops' mean position is within
    15 % of the field's size of the mean position of every nucleus with a window inside; the first
    ten in raster order (the old rule) are not, on any field with more than 20 such nuclei."""
    from tests.real_data import hoechst_fields
    from xferlab.data.importers.nuclei import segment_nuclei
    from xferlab.data.importers.opencell_raw import windows_inside

    fields = hoechst_fields()
    for name, image in sorted(fields.items()):
        inside = windows_inside(segment_nuclei(image).centres, image.shape, CROP)
        chosen = CropRule(10).choose(inside, CROP, name)
        size = max(image.shape)
        assert len(chosen) == min(10, len(inside)) and max_pair_overlap(chosen) <= 0.5, (name, len(chosen))
        offset = np.abs(np.mean(chosen, axis=0) - np.mean(inside, axis=0)).max() / size
        assert offset < 0.15, (name, offset)
        if len(inside) > 20:
            raster = np.abs(np.mean(inside[:10], axis=0) - np.mean(inside, axis=0)).max() / size
            assert raster > 0.15, (name, raster)
