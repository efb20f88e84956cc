"""The package's layers, read from its source with :mod:`ast` (nothing is imported).

Every ``import`` / ``from ... import`` counts, at module level and inside functions (a
lazy import is still an edge), except those under ``if TYPE_CHECKING:`` (they never run,
so they make no cycle and load nothing). An edge ``a -> b`` means module ``a`` imports
module ``b`` (or a name from it).

The rules (the layers as ``docs/design/architecture.md`` draws them, :data:`LAYERS`):

- every module of the package belongs to one layer (a new module must be placed);
- no arrow points up a layer, but the runner's documented doors (:data:`DOORS`): each a
  lazy import inside the one method that opens it, LangChain's ``with_retry`` pattern;
- no import circle among the package's modules, the doors left out (they run only when
  called, never at import time);
- ``batch_api`` (the library's Batch API job) imports nothing from ``cli``;
- nothing inside the package imports the package root ``langchain_autodemo`` itself
  (its ``__init__`` is the public front door, for users only).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = "langchain_autodemo"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE

#: The layers, lowest first (a name stands for the module or the package of that name).
LAYERS: dict[str, tuple[str, ...]] = {
    # pure: no network, files or clocks; tested by feeding text
    "core": (
        "errors", "_validation", "markers", "messages", "parser", "planning", "prompts", "alignment",
        "agreement", "grouping", "pricing", "usage", "settings", "inputs", "engine",
    ),
    # move text between a model and the engine
    "drivers": ("tracing", "drivers", "runnable"),
    # wrap a runner: they import it, never the reverse (but through a door)
    "wrappers": ("audit", "coalescing", "batch_api"),
    # I/O, user interfaces, integrations
    "edges": (
        "selector", "embeddings", "local_models", "llamacpp", "models", "testing", "tuning",
        "evaluation", "serving", "ray_data", "cli",
    ),
}  # fmt: skip

#: The runner's doors to the layers above it: (importer, imported) -> the one function
#: whose body holds the import. A door is public API a user finds on the runner
#: (``runner.with_audit(...)`` as LangChain's ``runnable.with_retry(...)``); it imports
#: its wrapper when called, so importing the runner loads none of them.
DOORS: dict[tuple[str, str], str] = {
    ("runnable", "audit"): "with_audit",
    ("runnable", "coalescing"): "with_coalescing",
    ("runnable", "batch_api"): "submit_batch_job",
    ("runnable", "selector"): "from_settings",  # a record's grouping needs its selector
}


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


def _imports(
    tree: ast.AST, function: str | None = None
) -> Iterator[tuple[ast.Import | ast.ImportFrom, str | None]]:
    """Every import statement, anywhere, but those under ``if TYPE_CHECKING:``, with the
    function whose body holds it (``None``: at module level)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), function)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, function
        inner = node.name if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
        yield from _imports(node, inner or function)


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


def _edges() -> tuple[dict[str, set[str]], dict[tuple[str, str], set[str | None]]]:
    """The import graph, and for every edge the functions holding its imports."""
    graph: dict[str, set[str]] = {}
    where: dict[tuple[str, str], set[str | None]] = {}
    for module, path in MODULES.items():
        found: set[str] = set()
        for node, function in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            for target in _targets(module, node):
                owner = _owning_module(target)
                if owner is not None and owner != module:
                    found.add(owner)
                    where.setdefault((_short(module), _short(owner)), set()).add(function)
        graph[_short(module)] = {_short(t) for t in found}
    return graph, where


GRAPH, WHERE = _edges()


def _under(module: str, layer: str) -> bool:
    return module == layer or module.startswith(f"{layer}.")


def _door(source: str, target: str) -> bool:
    return any(_under(source, a) and _under(target, b) for a, b in DOORS)


def _layer(module: str) -> int | None:
    for rank, names in enumerate(LAYERS.values()):
        if any(_under(module, name) for name in names):
            return rank
    return None


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


def test_every_module_has_a_layer() -> None:
    unplaced = {m for m in GRAPH if m != PACKAGE and _layer(m) is None}
    assert unplaced == set(), "place each module in LAYERS (and architecture.md)"


def test_no_arrow_points_up_but_the_doors() -> None:
    up = {
        (source, target)
        for source, targets in _without_root(GRAPH).items()
        for target in targets
        if (_layer(target) or 0) > (_layer(source) or 0) and not _door(source, target)
    }
    assert up == set()


@pytest.mark.parametrize(("edge", "function"), sorted(DOORS.items()))
def test_each_door_is_a_lazy_import_in_its_one_method(edge: tuple[str, str], function: str) -> None:
    source, target = edge
    holders = {f for (s, t), fs in WHERE.items() if s == source and _under(t, target) for f in fs}
    assert holders == {function}, f"{source} imports {target} in {holders}, not only {function}"


def test_no_import_circle() -> None:
    graph = {
        source: {t for t in targets if not _door(source, t)}
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


def test_nothing_inside_imports_the_package_root() -> None:
    importers = {source for source, targets in GRAPH.items() if PACKAGE in targets}
    assert importers == set()
