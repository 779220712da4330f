import json

import numpy as np
import pytest

from xferlab.reporting.aggregate import collect_runs, scan_runs
from xferlab.reporting.tables import experiment_table, markdown


def write(dir, backbone, seed, f1, **extra):
    dir.mkdir(parents=True)
    (dir / "metrics.json").write_text(json.dumps({
        "experiment": "e", "dataset": "d", "backbone": backbone, "channels": "natural", "head": "linear",
        "seed": seed, "test/macro_f1": f1, "test/accuracy": f1 + 0.01, **extra}))


def test_mean_std_per_condition_best_first(tmp_path):
    for seed, f1 in enumerate([0.5, 0.6, 0.7]):
        write(tmp_path / f"a{seed}", "weak", seed, f1)
    for seed, f1 in enumerate([0.8, 0.9]):
        write(tmp_path / f"b{seed}", "strong", seed, f1)
    table = experiment_table(collect_runs([tmp_path]))
    assert table["backbone"].tolist() == ["strong", "weak"]
    assert table["n_units"].tolist() == [2, 3]
    assert table.loc[1, "test/macro_f1/mean"] == pytest.approx(0.6)
    assert table.loc[1, "test/macro_f1/std"] == pytest.approx(np.std([0.5, 0.6, 0.7], ddof=1))
    md = markdown(table)
    assert "| strong |" in md.splitlines()[2] and "0.8500 ± 0.0707" in md.splitlines()[2]


def test_runs_from_before_a_metric_existed_are_kept_and_show_it_as_missing(tmp_path):
    """`test/balanced_accuracy` came later: old runs lack it, new runs have it; both are reported."""
    for seed in range(2):
        write(tmp_path / f"old{seed}", "old", seed, 0.5 + 0.1 * seed)
        write(tmp_path / f"new{seed}", "new", seed, 0.6 + 0.1 * seed, **{"test/balanced_accuracy": 0.4})
    runs, problems = scan_runs([tmp_path])
    assert len(runs) == 4 and not problems
    table = experiment_table(runs).set_index("backbone")
    assert np.isnan(table.loc["old", "test/balanced_accuracy/mean"])
    assert table.loc["new", "test/balanced_accuracy/mean"] == pytest.approx(0.4)
    header, _, *rows = markdown(experiment_table(runs)).splitlines()
    def cells(line):
        return [c.strip("| ") for c in line.split(" | ")]

    column = cells(header).index("balanced accuracy")
    assert {cells(r)[0]: cells(r)[column] for r in rows} == {
        "new": "0.4000 ± 0.0000", "old": "–"}


def test_a_run_without_its_primary_score_is_left_out_with_the_reason(tmp_path):
    write(tmp_path / "ok", "x", 0, 0.5)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text(json.dumps({"experiment": "e", "seed": 0}))
    runs, problems = scan_runs([tmp_path])
    assert len(runs) == 1 and problems[0][0].endswith("broken") and "test/macro_f1" in problems[0][1]


def test_no_results_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        collect_runs([tmp_path])
