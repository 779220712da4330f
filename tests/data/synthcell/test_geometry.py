import numpy as np

from xferlab.data.synthcell.domains import IMAGING
from xferlab.data.synthcell.geometry import make_layout


def test_layout_has_a_centre_cell_with_its_nucleus_inside():
    shape = IMAGING["opencell"].shape
    for seed in range(5):
        layout = make_layout(np.random.default_rng(seed), 64, shape)
        assert layout.owner[32, 32] >= 0  # a cell covers the crop centre
        assert layout.nucleus.sum() > 0 and (layout.nucleus <= layout.inside).all()
        assert layout.cytoplasm.sum() > layout.nucleus.sum() * 0.3
        assert len(layout.centres) >= 1 + shape.neighbours[0]
        assert 0 <= layout.contact.min() and layout.contact.max() <= 1


def test_hpa_cells_are_larger_with_relatively_smaller_nuclei():
    def stats(domain):
        areas, ratios = [], []
        for seed in range(10):
            layout = make_layout(np.random.default_rng(seed), 64, IMAGING[domain].shape)
            centre = layout.owner == layout.owner[32, 32]
            areas.append(centre.sum())
            ratios.append((centre & layout.nucleus).sum() / centre.sum())
        return np.mean(areas), np.mean(ratios)

    oc_area, oc_ratio = stats("opencell")
    hpa_area, hpa_ratio = stats("hpa")
    assert hpa_area > 1.8 * oc_area
    assert hpa_ratio < oc_ratio
