"""The console lines of a sweep (`runtime.console`): the first line, and one line per job."""

from pathlib import Path

from xferlab.runtime.console import job_line, shown_path, sweep_line


def test_a_job_line_names_the_job_its_score_time_and_cache(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = job_line("hpa-natural-s0", {"test/macro_f1": 0.81234}, {"total_seconds": 12.34, "cache_hit": True},
                    tmp_path / "outputs" / "x")
    assert line == f"[hpa-natural-s0] test/macro_f1=0.8123    12.3 s  cache hit  -> {Path('outputs') / 'x'}"
    assert "extracted" in job_line("a", {"test/macro_f1": 0.5}, {"total_seconds": 1, "cache_hit": False}, "/elsewhere")
    assert "no embeddings" in job_line("a", {"test/macro_f1": 0.5}, {"total_seconds": 1}, "/elsewhere")  # finetune
    assert job_line("a", {"test/macro_f1": 0.5}, {"skipped": True}, "/elsewhere") == \
        "[a] test/macro_f1=0.5000  already done  -> /elsewhere"


def test_paths_inside_the_working_folder_are_shown_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert shown_path(tmp_path / "outputs" / "sweeps") == str(Path("outputs") / "sweeps")
    assert shown_path("./outputs/s") == str(Path("outputs") / "s")
    assert shown_path("/somewhere/else") == "/somewhere/else"
    assert sweep_line(60, tmp_path / "s") == "60 job(s), every input checked -> s"
