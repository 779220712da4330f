import pytest

from xferlab.data.labels import OPENCELL_CATEGORIES, check_annotations, opencell_annotations, target_labels

README_COUNTS = {"cytoplasmic": 221, "vesicles": 140, "nucleoplasm": 133, "er": 78, "nucleolus_gc": 58,
                 "chromatin": 47, "membrane": 41, "golgi": 27, "nuclear_punctae": 25, "centrosome": 19,
                 "nuclear_membrane": 18, "nucleolus_fc_dfc": 18}


def test_packaged_table_is_the_public_table():
    table = opencell_annotations()
    assert len(table) == 2749
    assert table["ensg_id"].nunique() == 1310
    assert set(table["annotation_name"]) == set(OPENCELL_CATEGORIES)
    assert set(table["annotation_grade"]) == {1, 2, 3}


def test_single_grade3_gives_twelve_classes_over_825_targets():
    table = opencell_annotations()
    grade3 = table[table["annotation_grade"] == 3].groupby("ensg_id").size()
    assert (grade3 == 1).sum() == 868
    labels = target_labels(table, "single_grade3", min_targets=15)
    assert len(labels.classes) == 12 and len(labels.table) == 825
    counts = labels.table["label"].map(lambda i: labels.classes[i]).value_counts().to_dict()
    assert counts == README_COUNTS


def test_min_targets_changes_the_classes():
    labels = target_labels(opencell_annotations(), "single_grade3", min_targets=50)
    assert set(labels.classes) == {"cytoplasmic", "vesicles", "nucleoplasm", "er", "nucleolus_gc"}


def test_multilabel_sets_hold_grade_two_and_three():
    table = opencell_annotations()
    labels = target_labels(table, "multilabel", min_targets=15)
    row = labels.table.set_index("target_name").loc["AAMP"]  # cytoplasmic 3, nucleoplasm 1
    assert [labels.classes[i] for i in row["label_set"]] == ["cytoplasmic"]
    sizes = labels.table["label_set"].map(len)
    assert sizes.max() >= 2 and (sizes >= 1).all()
    # primary label is the highest-grade category
    assert all(row.label in row.label_set for row in labels.table.itertuples())


def test_graded_rule_weighs_every_annotated_category_by_its_grade():
    table = opencell_annotations()
    labels = target_labels(table, "graded", min_targets=15)
    row = labels.table.set_index("target_name").loc["AAMP"]  # cytoplasmic 3, nucleoplasm 1
    weights = {labels.classes[i]: w for i, w in zip(row["label_set"], row["label_weights"])}
    assert weights == {"cytoplasmic": 1.0, "nucleoplasm": 0.25}
    assert labels.classes[row["label"]] == "cytoplasmic"  # the primary: highest grade
    _, sets = labels.for_targets([labels.table.set_index("target_name").loc["AAMP", "ensg_id"]])
    assert sorted(sets[0][sets[0] > 0].tolist()) == [0.25, 1.0]
    # every category with more than 15 annotated targets at any grade is a class
    counts = table.groupby("annotation_name")["ensg_id"].nunique()
    assert list(labels.classes) == sorted(counts[counts > 15].index)
    assert set(labels.table["label_weights"].explode()) <= {1.0, 0.5, 0.25}


def test_for_targets_returns_labels_and_multi_hot_sets():
    labels = target_labels(opencell_annotations(), "single_grade3")
    first = labels.table.iloc[0]
    y, sets = labels.for_targets([first["ensg_id"], "ENSG_UNKNOWN"])
    assert y.tolist() == [first["label"], -1]
    assert sets[0].sum() == 1 and sets[1].sum() == 0


def test_unknown_rule_is_an_error():
    with pytest.raises(ValueError, match="dataset.labels.rule"):
        target_labels(opencell_annotations(), "grade_whatever")


def test_unknown_category_or_grade_in_an_annotation_table_is_an_error():
    table = opencell_annotations().head(3).copy()
    bad = table.copy()
    bad.loc[bad.index[1], "annotation_name"] = "vesicle"  # a typo of vesicles
    with pytest.raises(ValueError, match="annotations.csv: unknown annotation_name 'vesicle' in data row 2") as err:
        check_annotations(bad, "annotations.csv")
    assert "'vesicles'" in str(err.value) and "Correct the table" in str(err.value)  # the known list, the fix
    bad = table.copy()
    bad.loc[bad.index[0], "annotation_grade"] = 4
    with pytest.raises(ValueError, match="unknown annotation_grade '4' in data row 1"):
        check_annotations(bad, "annotations.csv")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['annotation_grade'\]"):
        check_annotations(table.drop(columns="annotation_grade"), "annotations.csv")
    assert check_annotations(table, "annotations.csv") is table
