
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
