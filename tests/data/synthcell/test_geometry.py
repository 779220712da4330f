import numpy as np

from xferlab.data.synthcell.domains import imaging_at
from xferlab.data.synthcell.geometry import make_layout

OPENCELL = imaging_at(0.0).shape


def test_layout_has_a_centre_cell_with_its_nucleus_inside():
    for seed in range(8):
        layout = make_layout(np.random.default_rng(seed), 64, OPENCELL)
        assert layout.owner[32, 32] >= 0  # a cell covers the crop centre
        assert (layout.nucleus <= layout.inside).all()
        if not layout.mitotic[layout.owner[32, 32]]:
            assert layout.nucleus.sum() > 0 and layout.cytoplasm.sum() > layout.nucleus.sum() * 0.3
        assert 0 <= layout.contact.min() and layout.contact.max() <= 1


def test_neighbourhoods_are_irregular_not_a_ring():
    """Neighbours grow from any placed cell at random angles: the angular gaps around the centre
    cell vary far more than a jittered regular ring's (std 0.25 rad)."""
    gaps = []
    for seed in range(40):
        layout = make_layout(np.random.default_rng(seed), 64, OPENCELL)
        d = layout.centres[1:] - layout.centres[0]
        if len(d) >= 3:
            a = np.sort(np.arctan2(d[:, 0], d[:, 1]))
            g = np.diff(np.concatenate([a, a[:1] + 2 * np.pi]))
            gaps.append(np.std(g / g.mean()))
    assert np.mean(gaps) > 0.45
    counts = {len(make_layout(np.random.default_rng(s), 64, OPENCELL).centres) for s in range(40)}
    assert len(counts) >= 3  # the density differs from crop to crop


def test_a_share_of_cells_is_mitotic_with_condensed_chromosomes_and_no_nucleus():
    mitotic, total = 0, 0
    for seed in range(150):
        layout = make_layout(np.random.default_rng(seed), 64, OPENCELL)
        mitotic += int(layout.mitotic.sum())
        total += len(layout.mitotic)
        for i in np.nonzero(layout.mitotic)[0]:
            cell = layout.owner == i
            assert not (layout.nucleus & cell).any() and len(layout.nucleoli[i]) == 0
            if cell.sum() > 50 and (layout.condensed * cell).max() > 0.9:
                assert (layout.condensed * cell > 0.5).sum() < 0.5 * cell.sum()
    assert 0.02 < mitotic / total < 0.09


def test_the_shift_makes_cells_larger_with_relatively_smaller_nuclei():
    def stats(shift):
        areas, ratios = [], []
        for seed in range(12):
            layout = make_layout(np.random.default_rng(seed), 64, imaging_at(shift).shape)
            centre = layout.owner == layout.owner[32, 32]
            if layout.mitotic[layout.owner[32, 32]]:
                continue
            areas.append(centre.sum())
            ratios.append((centre & layout.nucleus).sum() / centre.sum())
        return np.mean(areas), np.mean(ratios)

    (a0, r0), (a5, r5), (a1, r1) = stats(0.0), stats(0.5), stats(1.0)
    assert a0 < a5 < a1 and a1 > 1.8 * a0
    assert r0 > r5 > r1
