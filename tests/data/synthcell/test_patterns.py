import numpy as np
import pytest

from xferlab.data.labels import OPENCELL_CATEGORIES
from xferlab.data.synthcell import patterns
from xferlab.data.synthcell.domains import IMAGING
from xferlab.data.synthcell.geometry import make_layout
from xferlab.data.synthcell.render import render_crop


def layouts(n=12):
    return [make_layout(np.random.default_rng(s), 64, IMAGING["opencell"].shape) for s in range(n)]


def nuclear_fraction(category):
    """Share of the pattern's signal that lies in nuclei, averaged over layouts."""
    out = []
    for i, layout in enumerate(layouts()):
        p = patterns.CATEGORY_PATTERNS[category](layout, np.random.default_rng(100 + i))
        out.append((p * layout.nucleus).sum() / p.sum())
    return float(np.mean(out))


def test_every_category_has_a_pattern():
    assert set(patterns.CATEGORY_PATTERNS) == set(OPENCELL_CATEGORIES)
    layout = layouts(1)[0]
    for name, draw in patterns.CATEGORY_PATTERNS.items():
        img = draw(layout, np.random.default_rng(0))
        assert img.shape == (64, 64) and np.isfinite(img).all() and img.max() > 0.2, name


@pytest.mark.parametrize("category", ["nucleoplasm", "nucleolus_gc", "nucleolus_fc_dfc", "nuclear_punctae", "chromatin"])
def test_nuclear_categories_sit_in_the_nucleus(category):
    assert nuclear_fraction(category) > 0.7


@pytest.mark.parametrize("category", ["cytoplasmic", "vesicles", "mitochondria", "er", "golgi", "membrane",
                                      "cell_contact", "big_aggregates", "focal_adhesions"])
def test_cytoplasmic_categories_sit_outside_the_nucleus(category):
    assert nuclear_fraction(category) < 0.35


def test_membrane_is_at_the_outline_and_contacts_only_between_cells():
    for i, layout in enumerate(layouts(6)):
        mem = patterns.membrane(layout, np.random.default_rng(i))
        contact = patterns.cell_contact(layout, np.random.default_rng(i))
        edge = (layout.rho > 0.85) & (layout.rho < 1.1)
        assert mem[edge].mean() > 3 * mem[layout.nucleus].mean()
        free_edge = edge & (layout.contact < 0.05)
        touching = layout.contact > 0.5
        if free_edge.any() and touching.any():
            assert contact[touching].mean() > 2 * contact[free_edge].mean()


def test_render_is_deterministic_and_noisy():
    imaging = IMAGING["opencell"].scaled(64)
    a = render_crop(np.random.default_rng(0), imaging, [("er", 1.0)], 1.0, 64)
    b = render_crop(np.random.default_rng(0), imaging, [("er", 1.0)], 1.0, 64)
    c = render_crop(np.random.default_rng(1), imaging, [("er", 1.0)], 1.0, 64)
    assert a.dtype == np.uint16 and a.shape == (2, 64, 64)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    hpa = render_crop(np.random.default_rng(0), IMAGING["hpa"].scaled(64), [("golgi", 1.0)], 1.0, 64)
    assert hpa.shape == (4, 64, 64)
