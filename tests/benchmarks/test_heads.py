"""The head benchmark and the probe's selection study run end to end on the tiny smoke data and
return well-formed rows and tables (no timing assertions: tests never assert wall-clock times)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import SMOKE
from xferlab.bench import BENCHMARKS, format_table


@pytest.fixture(scope="module")
def rows(shared_root):
    from xferlab.benchmarks.heads import bench_head_vs_sklearn

    return bench_head_vs_sklearn(["random_tiny"], [0, 1], base=[*SMOKE, f"paths.output_root={shared_root}"])


def test_head_benchmark_rows(rows):
    by_name = {row["benchmark"]: row for row in rows}
    assert set(by_name) == {"heads/unit/random_tiny/split0", "heads/unit/random_tiny/split1",
                            "heads/linear_macro_f1_diff_mean", "heads/linear_macro_f1_diff_min",
                            "heads/linear_time_ratio_1thread", "heads/linear_time_ratio_default"}
    units = [r for r in rows if r["benchmark"].startswith("heads/unit/")]
    for u in units:
        assert u["value"] == u["macro_f1_diff"] == pytest.approx(u["probe_macro_f1"] - u["sklearn_macro_f1"], abs=2e-4)
        assert u["macro_f1_diff_to_converged"] == pytest.approx(
            u["probe_macro_f1"] - u["sklearn_converged_macro_f1"], abs=2e-4)
        # scikit-learn's grid is the probe's path in C, the same size, strongest penalty first
        assert len(u["C_grid"]) == 11 and u["C_grid"] == sorted(u["C_grid"])
        assert u["C_grid"][0] == pytest.approx(1 / (0.1 * u["n_train"]))
        assert np.isclose(u["C_grid"], u["probe_C"]).any() and u["sklearn_C"] in u["C_grid"]
        assert all(u[f"{side}_{t}_seconds"] > 0 for side in ("probe", "sklearn") for t in ("1", "default"))
        assert u["dims"] == 192 and u["n_train"] > 0 and u["n_test"] > 0
    diffs = [u["macro_f1_diff"] for u in units]
    assert by_name["heads/linear_macro_f1_diff_mean"]["value"] == pytest.approx(np.mean(diffs), abs=1e-4)
    low = by_name["heads/linear_macro_f1_diff_min"]
    assert low["value"] == min(diffs) and low["meets_target"] == (min(diffs) >= -0.01)
    ratio = by_name["heads/linear_time_ratio_1thread"]
    assert ratio["value"] == pytest.approx(ratio["probe_seconds"] / ratio["sklearn_seconds"], rel=0.02, abs=0.01)
    assert ratio["meets_target"] == (ratio["probe_seconds"] <= ratio["sklearn_seconds"])
    assert "target" not in by_name["heads/linear_time_ratio_default"]
    assert "heads/linear_time_ratio_1thread" in format_table(rows)


def test_the_readme_table_renders_from_a_saved_record(rows, tmp_path):
    from xferlab.benchmarks.heads import main, table

    record, out = tmp_path / "heads.json", tmp_path / "heads.md"
    record.write_text(json.dumps({"results": rows}))
    assert main(["--from", str(record), "--table", str(out)]) == 0
    text = out.read_text()
    assert text == table(rows) and text.count("| random_tiny |") == 2
    assert f"{rows[0]['probe_macro_f1']:.4f}" in text


def test_the_probe_selection_study_picks_by_its_rules(shared_root):
    from xferlab.benchmarks.probe_selection import RULES, pick, study, table

    points = [{"val_macro_f1": v, "val_loss": 1.0 - v, "test_macro_f1": t}
              for v, t in ((0.3, 0.2), (0.5, 0.4), (0.45, 0.6), (0.49, 0.5), (0.2, 0.1), (0.1, 0.0), (0.6, 0.3))]
    assert pick(points, "probe", patience=3) == 1  # the path stops at index 4, three penalties without a gain
    assert pick(points, "whole_path", patience=3) == 6  # 0.6 at the end of the path
    assert pick(points, "oracle", 3) == 2 and pick(points, "val_loss", 3) == 6
    assert pick(points, "smooth1", 3) == 2  # (0.5 + 0.45 + 0.49) / 3 is the best average
    rows = study(["random_tiny"], [0], base=[*SMOKE, f"paths.output_root={shared_root}"])
    (row,) = rows
    assert len(row["path"]) == 15 and all(f"{rule}_test_macro_f1" in row for rule in RULES)
    assert row["oracle_test_macro_f1"] >= max(row[f"{rule}_test_macro_f1"] for rule in RULES)
    assert "| probe |" in table(rows)


def test_head_benchmark_is_registered():
    assert "heads" in BENCHMARKS
