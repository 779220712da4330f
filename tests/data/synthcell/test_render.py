import numpy as np

from xferlab.data.synthcell.domains import imaging_at, opencell_targets
from xferlab.data.synthcell.render import render_crop
from xferlab.data.synthcell.source import render_target


def test_render_is_deterministic_and_noisy():
    imaging = imaging_at(0.0).scaled(64)
    a = render_crop(np.random.default_rng(0), imaging, [("er", 1.0)], 1.0, 64)
    b = render_crop(np.random.default_rng(0), imaging, [("er", 1.0)], 1.0, 64)
    c = render_crop(np.random.default_rng(1), imaging, [("er", 1.0)], 1.0, 64)
    assert a.dtype == np.uint16 and a.shape == (2, 64, 64)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    hpa = render_crop(np.random.default_rng(0), imaging_at(1.0, ("nucleus", "protein", "microtubules", "er")).scaled(64),
                      [("golgi", 1.0)], 1.0, 64)
    assert hpa.shape == (4, 64, 64)


def test_crops_of_one_field_of_view_share_its_conditions():
    """Background and brightness come from the plate and the FOV: two crops of one FOV are closer
    in their background level than two crops of different FOVs of the same target."""
    same, other = [], []
    targets = opencell_targets()
    for i in range(0, 60, 3):
        crops = render_target((i, targets[i], 0.0, ("nucleus", "protein"), 64, 4, 2, 0)).astype(float)
        floor = np.percentile(crops[:, 0], 5, axis=(1, 2))  # nucleus-channel background per crop
        same += [abs(floor[0] - floor[2]), abs(floor[1] - floor[3])]  # crop k is from FOV k mod 2
        other += [abs(floor[0] - floor[1]), abs(floor[2] - floor[3])]
    assert np.median(same) < 0.5 * np.median(other)


def test_antibody_background_stains_where_the_protein_is_not():
    """An antibody stain has non-specific background: with it, a nucleolar protein's crop is brighter
    away from the nucleoli than the same crops (same layouts) without it; live cells (shift 0) have none."""
    from dataclasses import replace

    assert imaging_at(0.0).style.antibody == 0.0
    stained = imaging_at(1.0).scaled(64)
    unstained = replace(stained, style=replace(stained.style, antibody=0.0))

    def median_level(imaging):
        return np.median([np.median(render_crop(np.random.default_rng(s), imaging, [("nucleolus_gc", 1.0)], 1.0,
                                                64)[1].astype(float)) for s in range(12)])

    assert median_level(stained) > 1.2 * median_level(unstained)
