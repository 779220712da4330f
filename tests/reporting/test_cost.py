"""The report's cost.md: what an experiment's jobs cost, read from their run_info.json."""

import json

from xferlab.reporting.cost import cost_markdown, job_costs


def job(tmp_path, name, **info):
    folder = tmp_path / name
    folder.mkdir()
    if info:
        (folder / "run_info.json").write_text(json.dumps(info))
    return folder


def test_cost_counts_the_extractions_the_sweep_ran_and_spreads_the_times_over_jobs(tmp_path):
    dirs = [job(tmp_path, "a", cache_hit=False, extract_seconds=10.0, images_per_second=330.0, head_seconds=2.0,
                total_seconds=14.0),
            job(tmp_path, "b", cache_hit=True, head_seconds=4.0, total_seconds=5.0),
            job(tmp_path, "c", cache_hit=False, extract_seconds=30.0, images_per_second=110.0, head_seconds=6.0,
                total_seconds=50.0),
            job(tmp_path, "d")]  # interrupted before run_info.json: counted, named as unknown
    costs = job_costs(dirs)
    assert costs["cache_hit"].tolist() == [False, True, False, None]
    row = cost_markdown(costs).splitlines()[2]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == ["4 (1 without run_info.json)", "2", "10.0 / 20.0 / 30.0", "110 / 220 / 330", "2.0 / 4.0 / 6.0",
                     "1 min 9 s"]


def test_a_probe_job_without_head_seconds_reports_its_fit_seconds(tmp_path):
    costs = job_costs([job(tmp_path, "a", cache_hit=True, fit_seconds=3.5, total_seconds=4.0)])
    assert costs["head_seconds"].tolist() == [3.5]
    assert "| 1 | 0 | – | – | 3.5 / 3.5 / 3.5 | 4.0 s |" in cost_markdown(costs)


def test_a_truncated_run_info_counts_as_unknown_and_the_sum_rounds_once(tmp_path):
    broken = job(tmp_path, "a")
    (broken / "run_info.json").write_text('{"cache_hit": tr')  # cut off mid-write by a crash
    costs = job_costs([broken, job(tmp_path, "b", cache_hit=True, head_seconds=1.0, total_seconds=119.7)])
    assert costs["cache_hit"].tolist() == [None, True]
    assert "| 2 (1 without run_info.json) | 0 | – | – | 1.0 / 1.0 / 1.0 | 2 min 0 s |" in cost_markdown(costs)
