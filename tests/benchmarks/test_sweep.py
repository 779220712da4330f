"""The sweep-cost benchmark's rows (structure only: tests never assert wall-clock times)."""

from __future__ import annotations

import json

import pytest

from xferlab.bench import BENCHMARKS, format_table
from xferlab.benchmarks.sweep import job_parts, sweep_rows


def write_job(folder, seed: int, cache_hit: bool, fit: float, total: float, extract: float | None = None):
    folder.mkdir(parents=True)
    info = {"cache_hit": cache_hit, "fit_seconds": fit, "total_seconds": total}
    if extract is not None:
        info["extract_seconds"] = extract
    (folder / "run_info.json").write_text(json.dumps(info))
    (folder / "metrics.json").write_text(json.dumps({"seed": seed}))


def check_rows(rows, seeds: int):
    assert [r["benchmark"] for r in rows] == [f"sweep_cost/{seeds}_seeds_over_1", "sweep_cost/extract",
                                              "sweep_cost/head_fit_per_job", "sweep_cost/outside_jobs"]
    ratio = rows[0]
    assert ratio["unit"] == "x" and ratio["target"] == 1.5
    assert ratio["meets_target"] == (ratio["value"] <= 1.5)
    assert ratio["value"] == round(ratio["sweep_seconds"] / ratio["one_seed_seconds"], 2)
    assert len(ratio["fit_seconds_per_job"]) == len(rows[2]["per_job"]) == seeds
    assert [j["seed"] for j in rows[2]["per_job"]] == list(range(seeds))
    assert sum(not j["cache_hit"] for j in rows[2]["per_job"]) == 1  # a cold cache: one extraction
    assert all(isinstance(r["value"], (int, float)) for r in rows)
    format_table(rows)


def test_rows_from_the_jobs_run_info(tmp_path):
    write_job(tmp_path / "one" / "run", 0, False, fit=10.0, total=70.0, extract=55.0)
    for seed in range(3):
        write_job(tmp_path / "sweep" / f"seed={seed}", seed, seed != 0, fit=10.0 + seed, total=15.0 + (55 if seed == 0 else 0),
                  extract=55.0 if seed == 0 else None)
    one, sweep = job_parts(tmp_path / "one"), job_parts(tmp_path / "sweep")
    rows = sweep_rows(80.0, 120.0, one, sweep, {"dataset": "d", "n_samples": 10, "seeds": 3, "overrides": []})
    check_rows(rows, 3)
    assert rows[0]["value"] == 1.5 and rows[0]["meets_target"] is True
    assert rows[1]["value"] == 55.0 and rows[2]["value"] == 11.0
    assert rows[3]["value"] == 120.0 - (70.0 + 15.0 + 15.0) and rows[3]["one_seed_seconds"] == 80.0 - 70.0
    with pytest.raises(RuntimeError, match="one extraction"):
        sweep_rows(80.0, 120.0, one, [dict(j, cache_hit=True) for j in sweep], {"seeds": 3})
    assert "sweep" in BENCHMARKS


@pytest.mark.slow
def test_bench_sweep_cost_on_the_smoke_config(tmp_path):
    """End to end on a tiny config: a store, a one-seed run and a two-seed sweep as processes (~1 min)."""
    from xferlab.benchmarks.sweep import bench_sweep_cost

    rows = bench_sweep_cost(seeds=2, overrides=["experiment=smoke", "logger=csv"], data_dir=tmp_path / "data",
                            workdir=tmp_path)
    check_rows(rows, 2)
    assert rows[0]["dataset"] == "toycell_tiny" and rows[0]["n_samples"] > 0
    assert list((tmp_path / "data").glob("toycell_tiny-*.zarr"))  # the store was built first, in data_dir
    assert [p for p in tmp_path.iterdir() if p.name != "data"] == []  # the runs' folders are gone
