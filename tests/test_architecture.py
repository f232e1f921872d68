"""The import graph is the architecture: no circle inside ``mi_bounds`` (docs/THEORY.md §7; that the
library never reaches outward is tests/test_package.py's check).

Every ``import`` statement of every module counts, at module level or inside a function (a lazy
import that closes a circle is still a circle). A module importing its own parent package's
``__init__`` is not an edge (Python runs the parents first either way).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "mi_bounds"
#: Lines above which a module must say at its top why it is long.
LONG_MODULE = 500


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(LIBRARY.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module ``name`` imports, resolved to a module of the library where it is one."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                found.add(sub if sub in known else module)
    parents = {name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)}
    return {m for m in found if m != name and m not in parents}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {n: {m for m in _imports(n, p, known) if m in known} for n, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_planted_circle():
    """Mutation check of the finder itself: a two-module circle and a three-module one."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert sorted(_cycles(graph)) == [["a", "b"], ["c", "d", "e"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_inside_the_library():
    cycles = _cycles(_graph())
    assert cycles == [], f"import circles inside mi_bounds: {cycles}"


@pytest.mark.parametrize("name", sorted(_modules()))
def test_a_long_module_says_why(name):
    """A module over ~500 lines states at its top why it is one module (a line "Why one module")."""
    path = _modules()[name]
    text = path.read_text()
    if text.count("\n") <= LONG_MODULE:
        return
    head = ast.get_docstring(ast.parse(text)) or ""
    assert "Why one module" in head, f"{name}: {text.count(chr(10))} lines and no reason given"
