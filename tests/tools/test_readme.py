"""The README and the documentation pages cannot drift from what they describe: their result blocks
equal docs/results/, the configuration page's group table and the experiment table list exactly
what conf/ holds, the README stays a short front door whose links lead somewhere, and
requirements.lock pins every dependency of pyproject.toml at a version pyproject allows."""

import re
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tools import lock, readme

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "src" / "xferlab" / "conf"
TEXT = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"
PAGES = {path: path.read_text() for path in readme.pages()}
README_LINES = 250  # the front door: what xferlab answers, the quick start, the study, your data, links


def section(title: str, page: str) -> str:
    text = (DOCS / page).read_text()
    start = text.index(title)
    end = text.find("\n#", start + len(title))
    return text[start:end if end > 0 else None]


def quoted(text: str) -> set[str]:
    return {f for f, _ in readme.blocks(text)}


def table_rows(text: str) -> list[list[str]]:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|") and not set(line) <= set("|-: ")]
    return rows[1:]  # without the header


def options(group: str) -> set[str]:
    return {p.stem for p in (CONF / group).glob("*.yaml")}


def test_the_readme_quotes_the_demo_results_and_they_equal_their_files():
    assert {"docs/results/demo.md", "docs/results/demo_verdicts.md"} <= quoted(TEXT)
    assert readme.drift(TEXT) == [], "run `make readme-results` (after `make demo`)"


def test_every_page_quoting_results_equals_their_files():
    stale = {path.relative_to(ROOT).as_posix(): readme.drift(text) for path, text in PAGES.items()}
    assert {page: files for page, files in stale.items() if files} == {}, "run `make readme-results`"
    assert readme.main(["check"]) == 0


def test_the_pages_quote_every_table_the_long_readme_quoted():
    """The README's results moved into the pages with their blocks, so they are still checked."""
    in_pages = set().union(*(quoted(text) for path, text in PAGES.items() if path.parent == DOCS))
    moved = {f"docs/results/{name}.md" for name in (
        "demo", "demo_verdicts", "knn_by_k", "calibration_summary", "pretrained_vs_random_confusions", "domain_gap",
        "domain_gap_verdicts", "scale", "shipped_backbones", "pretrained_vs_random", "probe_selection", "linear_probe")}
    assert moved <= in_pages
    assert quoted(TEXT) <= in_pages  # what the README shows, the site shows too


def test_check_names_the_page_whose_block_differs(tmp_path, monkeypatch, capsys):
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "docs" / "results" / "a.md").write_text("| new |\n")
    (tmp_path / "README.md").write_text("front door\n")
    (tmp_path / "docs" / "page.md").write_text("<!-- results: docs/results/a.md -->\n| old |\n<!-- /results -->\n")
    pages = readme.pages(tmp_path)
    assert pages == [tmp_path / "README.md", tmp_path / "docs" / "page.md"]  # results/ itself is no page
    monkeypatch.setattr(readme, "ROOT", tmp_path)
    monkeypatch.setattr(readme, "STATED", tmp_path / "docs" / "stated_numbers.yml")
    monkeypatch.setattr(readme, "GENERATED", {})
    monkeypatch.setattr(readme, "pages", lambda root=None: pages)
    assert readme.main(["check"]) == 1
    assert "docs/page.md quotes docs/results/a.md but differs from it" in capsys.readouterr().err


def test_the_readme_is_a_short_front_door_whose_links_lead_somewhere():
    assert len(TEXT.splitlines()) <= README_LINES
    for heading in ("## Quick start", "## The study on real data", "## Your own data in one command"):
        assert heading in TEXT
    for command in ("make demo", "make test", "make docs", "python -m xferlab.dashboard"):
        assert command in TEXT
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", TEXT)
    local = [link for link in links if "://" not in link]
    assert local, "the README links into the documentation"
    for link in local:
        assert (ROOT / link).is_file(), f"README links to {link}, which does not exist"
    nav = (ROOT / "mkdocs.yml").read_text()
    for link in local:
        if link.startswith("docs/"):
            assert link.removeprefix("docs/") in nav, f"{link} is not in the site's navigation (mkdocs.yml)"


def test_drift_names_the_block_that_differs_and_render_fixes_it(tmp_path):
    (tmp_path / "a.md").write_text("| x |\n")
    text = "intro\n<!-- results: a.md -->\n| old |\n<!-- /results -->\nend\n"
    assert readme.drift(text, tmp_path) == ["a.md"]
    fixed = readme.render(text, tmp_path)
    assert fixed == "intro\n<!-- results: a.md -->\n| x |\n<!-- /results -->\nend\n"
    assert readme.drift(fixed, tmp_path) == []


def test_config_group_table_lists_every_option_of_every_group():
    rows = table_rows(section("## Config groups at a glance", "configuration.md"))
    listed = {re.sub(r"`", "", row[0]): set(re.findall(r"`([^`]+)`", row[1])) for row in rows}
    groups = {p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra"}
    assert set(listed) == groups
    for group in groups:
        assert listed[group] == options(group), f"docs/configuration.md's config-group table, row {group}"


def test_experiment_table_lists_every_experiment():
    rows = table_rows(section("# Experiments and the report", "statistics.md").split("Measured with")[0])
    assert {row[0].strip("`") for row in rows} == options("experiment")


def test_predictions_columns_in_the_readme_are_the_ones_written(tmp_path):
    from tests.conftest import write_store
    from xferlab.run_folder import predictions_table

    store = write_store(tmp_path / "s.zarr", n_per_class=1)
    written = predictions_table(store, np.arange(len(store)), np.eye(2)[store.labels], multilabel=False).columns
    described = section("# What a job does and writes", "jobs.md")
    for column in written:
        assert f"`{re.sub(r'^score/.*', 'score/<class>', column)}`" in described, column


def test_the_lock_pins_every_dependency_at_an_allowed_version():
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    for req in lock.roots(ROOT / "pyproject.toml", lock.EXTRAS):
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is in pyproject.toml but not in requirements.lock: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req} vs locked {pins[name]}"
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"


def test_an_unknown_extra_is_refused():
    with pytest.raises(SystemExit, match="no optional-dependencies.nope"):
        lock.roots(ROOT / "pyproject.toml", ("nope",))


def test_installed_requirement_pins_come_from_the_environment():
    pinned = lock.closure([Requirement("packaging")])
    from importlib.metadata import version

    assert pinned["packaging"] == version("packaging")


def test_a_knn_curve_becomes_a_table_best_first(tmp_path):
    report = tmp_path / "report" / "knn"
    report.mkdir(parents=True)
    (report / "summary.md").write_text("| condition |\n")
    (report / "knn_macro_f1_by_k.csv").write_text("backbone,1,5\nrandom,0.25,0.2\nsynth_hpa,0.45,0.46\n")
    written = readme.copy_report(tmp_path / "report", tmp_path / "results")
    assert sorted(p.name for p in written) == ["knn.md", "knn_by_k.md"]
    assert (tmp_path / "results" / "knn_by_k.md").read_text() == (
        "| backbone | k=1 | k=5 |\n|---|---|---|\n| `synth_hpa` | 0.4500 | 0.4600 |\n| `random` | 0.2500 | 0.2000 |\n")


def test_the_shipped_backbones_table_equals_the_manifest():
    from xferlab.ssl.export import read_manifest

    assert (ROOT / "docs" / "results" / "shipped_backbones.md").read_text() == readme.shipped_table(read_manifest()), \
        "run `make readme-results` after `make pretrain`"


def test_the_calibration_summary_equals_docs_calibration():
    text = (ROOT / "docs" / "calibration.md").read_text()
    summary = (ROOT / "docs" / "results" / "calibration_summary.md").read_text()
    assert summary == readme.calibration_table(text), "run `make readme-results`"
    assert summary.startswith("**Old against new") and "| protein macro F1 |" in summary


@pytest.mark.parametrize("name", sorted(readme.BENCH_TABLES))
def test_the_benchmark_tables_equal_their_newest_records(name):
    if not any(f"docs/results/{name}" in quoted(text) for text in PAGES.values()):
        pytest.skip(f"no page quotes docs/results/{name}")
    assert readme.bench_record(readme.BENCH_TABLES[name][0]) is not None, f"no record for {name} under docs/bench/"
    assert (ROOT / "docs" / "results" / name).read_text() == readme.bench_table(name), "run `make readme-results`"



def test_no_page_types_a_measured_number_outside_its_results_blocks():
    """Every decimal, time or rate in the README and the pages lies in a results block (a file of
    docs/results/ rendered from its record) or is listed in docs/stated_numbers.yml as a setting,
    a published figure or arithmetic; a listed number no page holds any more fails too."""
    assert readme.unsourced() == {}, ("quote a docs/results/ file rendered from the record that measured it, or "
                                      "list a number that is no measurement in docs/stated_numbers.yml with why")


def test_typed_numbers_finds_decimals_and_times_in_prose_and_code_comments_only():
    text = ("The fit took 2.5 s, then 3 min; the default `lr=0.3` and 1,024 rows, 95 % intervals.\n"
            "```bash\nmake demo   # about 8 min\npython -m x head.lr=0.01\n```\n"
            "<!-- results: docs/results/a.md -->\n| 0.6542 |\n<!-- /results -->\n"
            "Rates: 230 images/s and 0.5x; version 2.6 of a library; span `x\n1.5`.\n")
    assert readme.typed_numbers(text) == ["2.5 s", "3 min", "8 min", "230 images/s", "0.5x", "2.6"]


def test_the_calibration_page_is_what_its_newest_record_renders():
    record = readme.bench_record("calibration-*.json")
    assert record is not None, "no docs/bench/calibration-<date>.json: run python -m xferlab.reporting.calibration --record"
    assert (DOCS / "calibration.md").read_text() == readme.calibration_page(), "run `make readme-results`"


def test_check_fails_on_a_number_typed_outside_a_results_block(tmp_path, monkeypatch, capsys):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("front door\n")
    (tmp_path / "docs" / "page.md").write_text("The demo took 8.5 min on a laptop.\n")
    (tmp_path / "docs" / "stated_numbers.yml").write_text('docs/page.md:\n  "0.25": a setting no longer on the page\n')
    monkeypatch.setattr(readme, "ROOT", tmp_path)
    monkeypatch.setattr(readme, "STATED", tmp_path / "docs" / "stated_numbers.yml")
    monkeypatch.setattr(readme, "GENERATED", {})
    monkeypatch.setattr(readme, "pages", lambda root=tmp_path: [tmp_path / "README.md", tmp_path / "docs" / "page.md"])
    assert readme.unsourced(tmp_path) == {"docs/page.md": ["8.5 min"], "docs/page.md (listed, not on the page)": ["0.25"]}
    assert readme.main(["check"]) == 1
    assert "docs/page.md: 8.5 min typed outside a results block" in capsys.readouterr().err


def test_check_names_a_generated_page_that_differs_from_its_record(tmp_path, monkeypatch, capsys):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("front door\n")
    (tmp_path / "docs" / "calibration.md").write_text("# typed over by hand\n")
    monkeypatch.setattr(readme, "ROOT", tmp_path)
    monkeypatch.setattr(readme, "STATED", tmp_path / "docs" / "stated_numbers.yml")
    monkeypatch.setattr(readme, "GENERATED", {"docs/calibration.md": lambda: "# what the record renders\n"})
    monkeypatch.setattr(readme, "pages", lambda root=None: [tmp_path / "README.md"])
    assert readme.main(["check"]) == 1
    assert "docs/calibration.md differs from what its record renders" in capsys.readouterr().err
    monkeypatch.setattr(readme, "GENERATED", {"docs/calibration.md": lambda: "# typed over by hand\n"})
    assert readme.main(["check"]) == 0
