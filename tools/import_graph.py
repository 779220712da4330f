"""The import graph of the `xferlab` package, read from the source (nothing is imported), and the
two rules the house keeps:

- no cycle: if module A imports B (at the top or inside a function), B does not import A, directly
  or through others;
- `xferlab.runtime` is the ground floor: its modules import only each other and `xferlab` itself
  (its version), never a package built on top of it (data, backbones, embeddings, heads, ...).

    python tools/import_graph.py          # prints the problems; exit status 1 if there are any
    python tools/import_graph.py --edges  # prints every edge `A -> B` of the graph

`tests/tools/test_import_graph.py` runs the same checks on every test run."""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "xferlab"
GROUND = "xferlab.runtime"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    return {module_name(p, package): p for p in sorted(package.rglob("*.py"))}


def imported(tree: ast.AST, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The package's modules that the module `name` imports (`import a.b`, `from a import b`,
    relative imports), wherever in the file the statement is."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = name.split(".") if is_package else name.split(".")[:-1]
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import xferlab.a.b.attr`: the module holding it
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package's modules it imports."""
    found = modules(package)
    known = set(found)
    return {name: imported(ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py", known)
            for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(groups)


def upward(edges: dict[str, set[str]], ground: str = GROUND) -> list[str]:
    """`A -> B` for every import from the ground-floor package into another part of xferlab
    (the root module `xferlab` itself, which holds only the version, is allowed)."""
    top = ground.split(".")[0]
    inside = lambda m: m == ground or m.startswith(ground + ".")  # noqa: E731
    return sorted(f"{a} -> {b}" for a, targets in edges.items() if inside(a)
                  for b in targets if not inside(b) and b != top)


def problems(package: Path = PACKAGE) -> list[str]:
    edges = graph(package)
    return ([f"import cycle: {' <-> '.join(group)}" for group in cycles(edges)]
            + [f"{GROUND} reaches up: {edge}" for edge in upward(edges)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", action="store_true", help="print every edge of the graph")
    args = parser.parse_args(argv)
    if args.edges:
        for a, targets in sorted(graph().items()):
            for b in sorted(targets):
                print(f"{a} -> {b}")
        return 0
    found = problems()
    for line in found:
        print(line)
    if not found:
        print(f"{len(modules())} modules: no import cycle, nothing imported from {GROUND} into a higher package")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
