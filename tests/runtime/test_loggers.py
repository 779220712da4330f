
import pytest

from xferlab.runtime.loggers import flatten, start_wandb_run


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": 1, "a.c.d": [1, 2], "e": None}


def test_online_without_credentials_goes_offline_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with pytest.warns(UserWarning, match="no W&B credentials"):
        run = start_wandb_run(mode="online", project="xferlab", entity=None, group="g", name="random-natural-s0",
                              job_type="train", tags=["seed:0"], config={"seed": 0}, save_dir=tmp_path)
    try:
        assert run.settings.mode == "offline" or run.offline
        assert run.name == "random-natural-s0" and run.group == "g"
    finally:
        run.finish()
    assert list(tmp_path.glob("wandb/offline-run-*"))


def test_unknown_mode_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="logger.mode"):
        start_wandb_run(mode="sometimes", project="p", entity=None, group="g", name="n", job_type="train",
                        tags=[], config={}, save_dir=tmp_path)


def test_a_rerun_replaces_the_earlier_csv_log_without_lightnings_warning(tmp_path):
    import warnings

    from omegaconf import OmegaConf

    from xferlab.runtime.loggers import build_loggers

    old = tmp_path / "csv" / "metrics.csv"
    old.parent.mkdir(parents=True)
    old.write_text("epoch,val/macro_f1\n0,0.5\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Lightning's "log files will be deleted" would raise here
        loggers, run = build_loggers(OmegaConf.create({"mode": "disabled"}), run_dir=tmp_path, group="g", name="n",
                                     job_type="train", tags=[], config={})
        loggers[0].log_metrics({"val/macro_f1": 0.7}, step=0)
        loggers[0].save()
    assert run is None
    assert "0.7" in old.read_text() and "0.5" not in old.read_text()
