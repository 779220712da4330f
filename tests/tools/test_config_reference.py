"""The configuration reference is written from conf/ (tools/config_reference.py), so it lists every
group and option with the option's own description, and the site's page carries it."""

from pathlib import Path

from tools import config_reference

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "src" / "xferlab" / "conf"


def test_every_option_of_every_group_is_in_the_reference_with_its_description_and_yaml():
    text = config_reference.render()
    groups = config_reference.groups()
    assert {"dataset", "backbone", "channels", "head", "trainer", "logger", "experiment", "paths", "hydra",
            "hydra/launcher"} <= set(groups)
    for group, files in groups.items():
        assert f"### `{group}`" in text
        for path in files:
            assert f"#### `{group}={path.stem}` {{#{config_reference.slug(group, path.stem)}}}" in text
            assert path.read_text().rstrip() in text  # the file itself, comments included
            description = config_reference.header(path.read_text())
            if description:
                assert description.replace("|", "/") in text
    for name in config_reference.TOP_LEVEL:
        assert (CONF / name).read_text().rstrip() in text


def test_the_header_is_the_leading_comment_without_the_package_line():
    assert config_reference.header("# @package _global_\n# one\n# two\nkey: 1\n# not this\n") == "one two"
    assert config_reference.header("key: 1\n") == ""


def test_a_new_option_appears_without_touching_the_docs(tmp_path):
    (tmp_path / "head").mkdir()
    (tmp_path / "head" / "mine.yaml").write_text("# My head | best\n_target_: x.Y\n")
    text = config_reference.fill("before\n<!-- config-reference -->\nafter\n", tmp_path)
    assert "| [`mine`](#option-head-mine) | My head / best |" in text and "_target_: x.Y" in text
    assert text.startswith("before\n") and text.endswith("after\n")
    assert config_reference.fill("no marker\n", tmp_path) == "no marker\n"


def test_the_configuration_page_asks_for_the_reference():
    assert config_reference.MARKER in (ROOT / "docs" / "configuration.md").read_text()
