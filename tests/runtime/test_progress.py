"""Progress bars: on a terminal (or forced with XFERLAB_PROGRESS=1), silent in logs and CI."""

import pytest

from xferlab.runtime.progress import ENV, bar, track


def test_off_when_stderr_is_not_a_terminal(capsys, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert list(track(range(5), 5, "render")) == [0, 1, 2, 3, 4]
    assert capsys.readouterr().err == ""  # pytest's captured stderr is not a terminal


def test_forced_on_it_shows_what_how_many_and_the_rate(capsys, monkeypatch):
    monkeypatch.setenv(ENV, "1")
    with bar(40, "extract synth_hpa", unit="img") as progress:
        progress.update(40)
    err = capsys.readouterr().err
    assert "extract synth_hpa" in err and "40/40" in err and "img/s" in err


def test_forced_off_even_where_it_would_show(capsys, monkeypatch):
    monkeypatch.setenv(ENV, "0")
    list(track(range(3), 3, "x"))
    assert capsys.readouterr().err == ""


def test_a_bad_setting_names_the_variable_and_the_choices(monkeypatch):
    monkeypatch.setenv(ENV, "maybe")
    with pytest.raises(ValueError, match="XFERLAB_PROGRESS='maybe'.*1 .*0 .*auto"):
        bar(1, "x")
