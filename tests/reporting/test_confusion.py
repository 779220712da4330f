import pandas as pd

from xferlab.reporting.confusion import confusion_from_runs, top_confusions


def test_confusion_rows_sum_to_one_and_top_pairs(tmp_path):
    rows = [("a", "a")] * 8 + [("a", "b")] * 2 + [("b", "b")] * 5 + [("b", "c")] * 5 + [("c", "c")] * 10
    pd.DataFrame(rows, columns=["label_name", "pred_name"]).to_csv(tmp_path / "predictions.csv", index=False)
    matrix = confusion_from_runs([tmp_path])
    assert matrix.loc["a", "b"] == 0.2 and matrix.loc["b", "c"] == 0.5
    assert matrix.sum(axis=1).round(6).tolist() == [1.0, 1.0, 1.0]
    assert top_confusions(matrix, 2) == [("b", "c", 0.5), ("a", "b", 0.2)]
