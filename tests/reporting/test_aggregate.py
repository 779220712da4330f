import json

import numpy as np
import pytest

from xferlab.reporting.aggregate import collect_runs, summarize, to_markdown


def write(dir, backbone, seed, f1):
    dir.mkdir(parents=True)
    (dir / "metrics.json").write_text(json.dumps({
        "experiment": "e", "dataset": "d", "backbone": backbone, "channels": "natural", "head": "linear",
        "seed": seed, "test/macro_f1": f1, "test/accuracy": f1 + 0.01}))


def test_mean_std_per_condition_best_first(tmp_path):
    for seed, f1 in enumerate([0.5, 0.6, 0.7]):
        write(tmp_path / f"a{seed}", "weak", seed, f1)
    for seed, f1 in enumerate([0.8, 0.9]):
        write(tmp_path / f"b{seed}", "strong", seed, f1)
    table = summarize(collect_runs([tmp_path]))
    assert table["backbone"].tolist() == ["strong", "weak"]
    assert table["n_seeds"].tolist() == [2, 3]
    assert table.loc[1, "test/macro_f1/mean"] == pytest.approx(0.6)
    assert table.loc[1, "test/macro_f1/std"] == pytest.approx(np.std([0.5, 0.6, 0.7], ddof=1))
    md = to_markdown(table)
    assert "| strong |" in md.splitlines()[2] and "0.8500 ± 0.0707" in md.splitlines()[2]


def test_no_results_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        collect_runs([tmp_path])
