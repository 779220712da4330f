"""The house's imports run one way: no module imports itself back through others, and the runtime
package (the ground floor) imports nothing built on top of it. Read from the source, so it is fast."""

import textwrap

from tools import import_graph


def test_the_package_has_no_import_cycle_and_runtime_reaches_nowhere_up():
    assert import_graph.problems() == []


def test_the_graph_sees_imports_inside_functions_and_relative_ones(tmp_path):
    package = tmp_path / "xferlab"
    for name, text in {
        "__init__.py": "__version__ = '0'\n",
        "runtime/__init__.py": "",
        "runtime/io.py": "from xferlab import __version__\n",
        "runtime/checks.py": "def f():\n    from xferlab.data.store import Store\n",
        "data/__init__.py": "",
        "data/store.py": "from ..runtime import io\nimport xferlab.data.splits\n",
        "data/splits.py": "def g():\n    from . import store\n",
    }.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    edges = import_graph.graph(package)
    assert edges["xferlab.data.store"] == {"xferlab.runtime.io", "xferlab.data.splits"}
    assert edges["xferlab.runtime.checks"] == {"xferlab.data.store"}
    assert import_graph.cycles(edges) == [["xferlab.data.splits", "xferlab.data.store"]]
    assert import_graph.upward(edges) == ["xferlab.runtime.checks -> xferlab.data.store"]
    assert len(import_graph.problems(package)) == 2
