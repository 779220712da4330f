"""What a run leaves is complete or absent: metrics.json (written last) marks a complete set of files."""

from __future__ import annotations

import errno
import json

import numpy as np
import pandas as pd
import pytest

from tests.conftest import SMOKE, compose_config, write_store
from xferlab.runtime.io import DiskFullError
from xferlab.run_folder import write_results


def test_a_failure_part_way_leaves_no_metrics_json_and_no_temporary_files(tmp_path, monkeypatch):
    store = write_store(tmp_path / "s.zarr")
    cfg = compose_config(SMOKE + [f"paths.output_root={tmp_path}", f"paths.output_dir={tmp_path / 'run'}"])
    run = tmp_path / "run"
    split = np.zeros(len(store), dtype=np.int8)
    predictions = pd.DataFrame({"sample_id": ["x"], "label": [0], "pred": [0]})

    def write(metrics):
        write_results(cfg, run, store, split, metrics, predictions, {"seconds": 1})

    write({"test/macro_f1": 0.5})  # an earlier run of this folder, complete
    replace = __import__("os").replace

    def full_disk_at(name):
        def fake(src, dst):
            if str(dst).endswith(name):
                raise OSError(errno.ENOSPC, "No space left on device")
            return replace(src, dst)
        return fake

    for name in ("predictions.csv", "metrics.json"):
        monkeypatch.setattr("xferlab.runtime.io.os.replace", full_disk_at(name))
        with pytest.raises(DiskFullError, match="disk full") as err:
            write({"test/macro_f1": 0.7})
        assert str(run / name) in str(err.value)
        # the earlier metrics.json is gone, not left beside this run's files; no partial file remains
        assert not (run / "metrics.json").exists(), name
        assert not [p.name for p in run.iterdir() if p.name.startswith(".")], name
    monkeypatch.undo()
    write({"test/macro_f1": 0.7})
    assert json.loads((run / "metrics.json").read_text()) == {"test/macro_f1": 0.7}
    assert pd.read_csv(run / "predictions.csv").equals(predictions)
