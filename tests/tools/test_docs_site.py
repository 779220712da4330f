"""The documentation site builds with `mkdocs build --strict` (what `make docs` and `.ci/run` run):
every page in the navigation, every link and anchor resolving, the configuration reference and the
API reference filled in; a broken link fails the build."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("mkdocs", reason="the documentation tools come with the dev extra: make install")


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          cwd=config.parent, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "NO_MKDOCS_2_WARNING": "1", "HOME": str(site.parent)})


def test_the_site_builds_strictly_with_the_generated_references(tmp_path):
    proc = build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode == 0, proc.stderr[-3000:]
    configuration = (tmp_path / "site" / "configuration" / "index.html").read_text()
    assert 'id="option-backbone-hpa"' in configuration and 'id="option-dataset-folder"' in configuration
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "xferlab.metrics" in api and "job_line" in api  # written from the docstrings
    for page in ("getting_started", "own_data", "reproducing", "backbones", "statistics", "performance",
                 "clusters", "reliability", "pretraining", "synthcell", "dashboard"):
        assert (tmp_path / "site" / page / "index.html").is_file(), page


def test_a_broken_link_fails_the_build(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copytree(ROOT / "tools", copy / "tools")
    shutil.copytree(ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pth"))
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    page = copy / "docs" / "clusters.md"
    page.write_text(page.read_text() + "\nSee [nowhere](backbones.md#no-such-heading).\n")
    proc = build(copy / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode != 0
    assert "no-such-heading" in proc.stdout + proc.stderr
