"""notebooks/results.ipynb runs on a tiny report and shows its table and figures."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tests.reporting.test_build import write_run
from xferlab.reporting.build import build_report

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "results.ipynb"


def test_results_notebook_executes_on_a_tiny_report(tmp_path, monkeypatch):
    for s in range(2):
        write_run(tmp_path / "sweep", f"a{s}", "x", s, 0.6 + 0.01 * s)
        write_run(tmp_path / "sweep", f"b{s}", "y", s, 0.8 + 0.01 * s)
    build_report([tmp_path / "sweep"], tmp_path / "report", n_boot=10)
    monkeypatch.setenv("XFERLAB_REPORT", str(tmp_path / "report"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs)
    assert "1 experiment(s)" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert any("| y |" in o.get("data", {}).get("text/markdown", "") for o in outputs)


def test_the_committed_notebook_shows_the_demo_results_the_readme_quotes():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    markdown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    table = (NOTEBOOK.parents[1] / "docs" / "results" / "demo.md").read_text().strip()
    assert table in markdown, "re-run `make demo`, `make readme-results` and `make notebook` together"
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4
