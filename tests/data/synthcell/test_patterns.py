import numpy as np
import pytest
from scipy.ndimage import label

from xferlab.data.labels import OPENCELL_CATEGORIES
from xferlab.data.synthcell import patterns
from xferlab.data.synthcell.domains import imaging_at
from xferlab.data.synthcell.geometry import make_layout


def layouts(n=12, size=64, shift=0.0):
    out = []
    for s in range(n):
        layout = make_layout(np.random.default_rng(s), size, imaging_at(shift).scaled(size).shape)
        layout.style = imaging_at(shift).style
        out.append(layout)
    return out


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


def nuclear_correlation(category, layout, seed):
    nuc = layout.nucleus & (layout.nu < 0.8)
    a = patterns.CATEGORY_PATTERNS[category](layout, np.random.default_rng(seed))[nuc]
    return np.corrcoef(a, patterns.hoechst(layout)[nuc])[0, 1]


def test_chromatin_follows_the_dna_stain_and_nucleoplasm_does_not():
    chromatin = [nuclear_correlation("chromatin", L, i) for i, L in enumerate(layouts(8)) if L.nucleus.sum() > 100]
    nucleoplasm = [nuclear_correlation("nucleoplasm", L, i) for i, L in enumerate(layouts(8)) if L.nucleus.sum() > 100]
    assert np.mean(chromatin) > 0.9
    assert np.mean(nucleoplasm) < 0.6


def test_fibrillar_centres_are_several_beads_per_nucleolus_at_128_px():
    """At 128 px the fibrillar centres are separate beads inside a nucleolus (several bright
    components each), while the granular component fills it (about one)."""
    beads, granular = [], []
    for i, layout in enumerate(layouts(10, size=128)):
        centre = layout.owner[64, 64]
        if layout.mitotic[centre]:
            continue
        inside = (layout.nucleolus_mask > 0.2) & (layout.owner == centre)

        def components(img):
            return label(inside & (img > 0.5 * img[inside].max()))[1] / len(layout.nucleoli[centre])

        beads.append(components(patterns.nucleolus_fc_dfc(layout, np.random.default_rng(i))))
        granular.append(components(patterns.nucleolus_gc(layout, np.random.default_rng(i))))
    assert np.mean(beads) >= 2 and np.mean(beads) > 2 * np.mean(granular)


def test_er_is_a_reticulum_through_the_cytoplasm_not_a_perinuclear_fringe():
    far, near = [], []
    for i, layout in enumerate(layouts(8)):
        er = patterns.er(layout, np.random.default_rng(i))
        cyto = layout.cytoplasm
        outer = cyto & (layout.rho > 0.75)
        if outer.sum() < 30:
            continue
        lit = er > 0.3 * er[cyto].max()  # (the old perinuclear fringe: none of the periphery)
        far.append(lit[outer].mean())
        near.append(lit[cyto & (layout.nu < 1.3)].mean())
    assert np.mean(far) > 0.1  # the network reaches the cell periphery
    assert np.mean(near) > np.mean(far)  # and is densest around the nucleus


def test_membrane_is_at_the_outline_and_contacts_only_between_cells():
    for i, layout in enumerate(layouts(6)):
        mem = patterns.membrane(layout, np.random.default_rng(i))
        contact = patterns.cell_contact(layout, np.random.default_rng(i))
        edge = (layout.rho > 0.85) & (layout.rho < 1.1)
        interior = layout.inside & (layout.rho < 0.6)
        assert mem[edge].mean() > 3 * mem[interior].mean()
        free_edge = edge & (layout.contact < 0.05)
        touching = layout.contact > 0.5
        if free_edge.any() and touching.any():
            assert contact[touching].mean() > 2 * contact[free_edge].mean()
