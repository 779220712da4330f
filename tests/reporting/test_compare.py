"""The planned comparisons: as before without settings; within matching settings with them."""

import pytest

from xferlab.reporting.compare import planned, without_reference


def test_without_settings_every_condition_meets_the_reference_then_every_pair():
    names = ["b", "a", "random"]
    assert planned(names, "random", "all") == [("b", "random"), ("a", "random"), ("b", "a")]
    assert planned(names, "random", "none") == [("b", "random"), ("a", "random")]
    assert planned(names, None, "all") == [("b", "a"), ("b", "random"), ("a", "random")]
    with pytest.raises(ValueError, match="report.pairs='some'"):
        planned(names, None, "some")


STRATA = {  # condition -> (condition keys' name, settings)
    "hpa, mode=fov": ("hpa", (("dataset.mode", "fov"),)),
    "random, mode=fov": ("random", (("dataset.mode", "fov"),)),
    "hpa, mode=crops": ("hpa", (("dataset.mode", "crops"),)),
    "imagenet, mode=crops": ("imagenet", (("dataset.mode", "crops"),)),
    "random, mode=crops": ("random", (("dataset.mode", "crops"),)),
}


def test_with_settings_each_condition_meets_the_reference_of_its_own_settings():
    names = list(STRATA)
    assert planned(names, "random", "none", STRATA) == [
        ("hpa, mode=fov", "random, mode=fov"), ("hpa, mode=crops", "random, mode=crops"),
        ("imagenet, mode=crops", "random, mode=crops")]
    assert planned(names, "random, mode=fov", "none", STRATA) == [("hpa, mode=fov", "random, mode=fov")]
    assert without_reference(names, "random, mode=fov", STRATA) == [
        "hpa, mode=crops", "imagenet, mode=crops", "random, mode=crops"]


def test_pairs_all_adds_the_pairs_of_one_setting_and_of_one_condition_across_settings():
    chosen = planned(list(STRATA), "random", "all", STRATA)
    added = chosen[3:]
    assert added == [("hpa, mode=fov", "hpa, mode=crops"), ("random, mode=fov", "random, mode=crops"),
                     ("hpa, mode=crops", "imagenet, mode=crops")]
    for a, b in chosen:  # never a pair that differs in a setting and in something else
        assert STRATA[a][1] == STRATA[b][1] or STRATA[a][0] == STRATA[b][0]


def test_across_two_settings_only_pairs_that_differ_in_one_of_them():
    strata = {f"x, a={a}, b={b}": ("x", (("a", a), ("b", b))) for a in "12" for b in "12"}
    chosen = planned(list(strata), None, "all", strata)
    assert sorted(map(sorted, chosen)) == sorted(map(sorted, [
        ("x, a=1, b=1", "x, a=1, b=2"), ("x, a=1, b=1", "x, a=2, b=1"),
        ("x, a=1, b=2", "x, a=2, b=2"), ("x, a=2, b=1", "x, a=2, b=2")]))
