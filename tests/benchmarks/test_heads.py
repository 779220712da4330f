"""The head benchmark runs end to end on the tiny smoke data and returns well-formed rows
(no timing assertions: tests never assert wall-clock times)."""

from __future__ import annotations

from tests.conftest import SMOKE
from xferlab.bench import BENCHMARKS, format_table


def test_head_benchmark_rows(shared_root):
    from xferlab.benchmarks.heads import bench_head_vs_sklearn

    rows = bench_head_vs_sklearn([*SMOKE, f"paths.output_root={shared_root}"], heads=("linear", "mlp"), repeats=1)
    by_name = {row["benchmark"]: row for row in rows}
    assert set(by_name) == {f"heads/{head}_{kind}" for head in ("linear", "mlp")
                            for kind in ("fit_time_ratio", "macro_f1_diff", "fit_time_ratio_1thread")}
    for row in rows:
        assert {"benchmark", "value", "unit", "xferlab_seconds", "sklearn_seconds", "xferlab_macro_f1",
                "sklearn_macro_f1", "n_train", "n_val", "n_test", "dims", "classes", "head"} <= set(row)
        assert row["xferlab_seconds"] > 0 and row["sklearn_seconds"] > 0
        assert 0 <= row["xferlab_macro_f1"] <= 1 and 0 <= row["sklearn_macro_f1"] <= 1
        assert row["dims"] == 192 and row["n_train"] > 0 and row["n_test"] > 0
    ratio = by_name["heads/linear_fit_time_ratio"]
    assert ratio["target"] == 1.0 and ratio["meets_target"] == (ratio["value"] <= 1.0)
    assert ratio["value"] > 0 and ratio["unit"] == "x sklearn"
    diff = by_name["heads/linear_macro_f1_diff"]
    assert diff["target"] == -0.01 and diff["meets_target"] == (diff["value"] >= -0.01)
    assert abs(diff["value"] - (diff["xferlab_macro_f1"] - diff["sklearn_macro_f1"])) < 1e-3
    assert "target" not in by_name["heads/linear_fit_time_ratio_1thread"]
    assert "heads/linear_fit_time_ratio" in format_table(rows)


def test_head_benchmark_is_registered():
    assert "heads" in BENCHMARKS
