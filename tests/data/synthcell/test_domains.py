import pytest

from xferlab.data.labels import opencell_annotations
from xferlab.data.synthcell.domains import HPA_TO_OPENCELL, hpa_targets, imaging_at, opencell_targets


def test_every_opencell_target_with_grade_weighted_mixtures():
    targets = opencell_targets()
    assert len(targets) == 1310
    aamp = next(t for t in targets if t.name == "AAMP")  # cytoplasmic 3, nucleoplasm 1
    assert dict(aamp.mixture) == pytest.approx({"cytoplasmic": 0.8, "nucleoplasm": 0.2})
    assert all(abs(sum(w for _, w in t.mixture) - 1) < 1e-4 for t in targets)


def test_hpa_genes_follow_hpa_frequencies_and_are_never_opencell_targets():
    targets = hpa_targets(1000, seed=0)
    assert len({t.ensg_id for t in targets}) == 1000
    assert not {t.ensg_id for t in targets} & {t.ensg_id for t in opencell_targets()}
    primary = [max(t.mixture, key=lambda m: m[1])[0] for t in targets]
    counts = {c: primary.count(c) for c in set(primary)}
    # HPA: nucleoplasm and cytosol are the most common main locations
    assert sorted(counts, key=counts.get)[-2:] in (["cytoplasmic", "nucleoplasm"], ["nucleoplasm", "cytoplasmic"])
    assert set(HPA_TO_OPENCELL.values()) <= set(opencell_annotations()["annotation_name"])
    with pytest.raises(ValueError, match="not OpenCell targets"):
        hpa_targets(10**6, seed=0)


def test_the_domain_moves_continuously_from_opencell_like_to_hpa_like():
    steps = [imaging_at(t) for t in (0.0, 0.25, 0.5, 0.75, 1.0)]
    radii = [s.shape.cell_radius[0] for s in steps]
    antibody = [s.style.antibody for s in steps]
    spread = [s.style.spread for s in steps]
    assert radii == sorted(radii) and len(set(radii)) == 5
    assert antibody[0] == 0.0 and antibody == sorted(antibody) and antibody[-1] > 0.1  # live cells: no stain
    assert spread == sorted(spread)
    assert steps[0].offset > steps[-1].offset and steps[0].photons[0] < steps[-1].photons[0]


@pytest.mark.parametrize("shift", [-0.1, 1.5])
def test_a_shift_outside_0_1_is_refused(shift):
    with pytest.raises(ValueError, match="domain_shift"):
        imaging_at(shift)


def test_channels_are_checked():
    assert imaging_at(1.0, ("nucleus", "protein", "microtubules", "er")).channels[2] == "microtubules"
    with pytest.raises(ValueError, match="dataset.channels"):
        imaging_at(0.0, ("nucleus", "actin"))
    with pytest.raises(ValueError, match="needs protein"):
        imaging_at(0.0, ("nucleus",))
