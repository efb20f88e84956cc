"""The package's layers, read from its source with :mod:`ast` (nothing is imported).

Every ``import`` / ``from ... import`` counts, at module level and inside functions (a
lazy import is still an edge), except those under ``if TYPE_CHECKING:`` (they never run,
so they make no cycle and load nothing). An edge ``a -> b`` means module ``a`` imports
module ``b`` (or a name from it).

The rules:

- no import circle among the package's modules;
- ``batch_api`` (the library's Batch API job) imports nothing from ``cli``;
- the core modules (:data:`CORE`) import nothing from the layers above them (:data:`UPPER`);
- nothing inside the package imports the package root ``langchain_autodemo`` itself
  (its ``__init__`` is the public front door, for users only).

:data:`PENDING_RUNNABLE_EDGES` lists, explicitly, the edges of ``runnable.py`` that are
still being removed (issue 31: the settings record and the split of ``runnable.py``);
each of them is allowed only while it exists, so the set can only shrink.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = "langchain_autodemo"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE

#: The pure core: these import nothing from :data:`UPPER`.
CORE = (
    "agreement",
    "grouping",
    "planning",
    "parser",
    "markers",
    "prompts",
    "alignment",
    "engine",
    "pricing",
    "usage",
    "errors",
    "_validation",
)

#: The layers above the core (a name stands for the module or the package of that name).
UPPER = (
    "runnable",
    "audit",
    "coalescing",
    "batch_api",
    "tuning",
    "evaluation",
    "serving",
    "cli",
    "ray_data",
)

#: Edges of ``runnable.py`` (and the circles through it) still to be removed by the split
#: of ``runnable.py`` (issue 31). Only these may break the rules above; delete each one
#: here once it is gone from the source (the test says so when it is).
PENDING_RUNNABLE_EDGES = frozenset(
    {
        ("runnable", "audit"),
        ("runnable", "coalescing"),
        ("runnable", "batch_api"),
        ("runnable", "tuning"),
    }
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _short(module: str) -> str:
    """``langchain_autodemo.batch_api.job`` -> ``batch_api.job``; the root stays whole."""
    return module[len(PACKAGE) + 1 :] if module != PACKAGE else PACKAGE


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, anywhere, but those under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]))
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _imports(node)


def _owning_module(dotted: str) -> str | None:
    """The longest package module that ``dotted`` names (a module or a name in one)."""
    parts = dotted.split(".")
    while parts:
        name = ".".join(parts)
        if name in MODULES:
            return name
        parts.pop()
    return None


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    if node.level:
        base = module.split(".")
        if MODULES[module].name != "__init__.py":
            base.pop()
        base = base[: len(base) - (node.level - 1)]
        source = ".".join([*base, node.module] if node.module else base)
    else:
        source = node.module or ""
    yield source
    # ``from pkg import sub`` imports the submodule ``pkg.sub`` (a name in pkg otherwise)
    yield from (f"{source}.{alias.name}" for alias in node.names)


def _edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        found: set[str] = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            for target in _targets(module, node):
                owner = _owning_module(target)
                if owner is not None and owner != module:
                    found.add(owner)
        graph[_short(module)] = {_short(t) for t in found}
    return graph


GRAPH = _edges()


def _under(module: str, layer: str) -> bool:
    return module == layer or module.startswith(f"{layer}.")


def _pending(source: str, target: str) -> bool:
    return any(_under(source, a) and _under(target, b) for a, b in PENDING_RUNNABLE_EDGES)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _without_root(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph without the package root's own edges (its ``__init__`` re-exports)."""
    return {
        source: {t for t in targets if t != PACKAGE}
        for source, targets in graph.items()
        if source != PACKAGE
    }


def test_the_graph_is_read() -> None:
    assert "runnable" in GRAPH and "cli.batch_api" in GRAPH
    assert "engine" in GRAPH["runnable"]
    assert "cli.run" in GRAPH["cli.commands"]  # a lazy import, inside a function


def test_no_import_circle() -> None:
    graph = {
        source: {t for t in targets if not _pending(source, t)}
        for source, targets in _without_root(GRAPH).items()
    }
    assert _cycles(graph) == []


def test_batch_api_imports_nothing_from_cli() -> None:
    bad = {
        (source, target)
        for source, targets in GRAPH.items()
        if _under(source, "batch_api")
        for target in targets
        if _under(target, "cli")
    }
    assert bad == set()


@pytest.mark.parametrize("core", CORE)
def test_core_imports_nothing_above_it(core: str) -> None:
    assert core in GRAPH, f"{core} is not a module of the package"
    above = {t for t in GRAPH[core] for layer in UPPER if _under(t, layer)}
    assert above == set()


def test_nothing_inside_imports_the_package_root() -> None:
    importers = {source for source, targets in GRAPH.items() if PACKAGE in targets}
    assert importers == set()


@pytest.mark.parametrize("edge", sorted(PENDING_RUNNABLE_EDGES))
def test_pending_runnable_edges_still_exist(edge: tuple[str, str]) -> None:
    """Once ``runnable.py`` drops an edge, it leaves :data:`PENDING_RUNNABLE_EDGES` too."""
    source, target = edge
    assert any(_under(t, target) for t in GRAPH[source]), (
        f"{source} no longer imports {target}: remove {edge} from PENDING_RUNNABLE_EDGES"
    )
