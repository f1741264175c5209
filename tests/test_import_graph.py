"""The package's import graph, read from the source with `ast` (nothing is imported): no module
cycle, and no import that goes up the layer order below.

Every import counts: at module level, inside functions (where cycles hide) and under
TYPE_CHECKING (a dependency of the design even when not of the running program).
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

PACKAGE = "asc_deploy"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# The layers, bottom first: a module may import its own layer and the layers below it, never one
# above. Read off the README's architecture section and docs/architecture.md, checked against
# what the code needs:
# - the foundation imports nothing above it ("__init__" is asc_deploy/__init__.py, the version);
#   manifest.py (an artifact's manifest, read and verified) and plotting.py (PNG helpers) sit
#   here because layers far apart share them;
# - config is the run spec checked at the door: it names what it checks (criterion names,
#   scenario settings) itself, so loading a config imports no numpy, torch or measuring code;
# - data, models and tasks are what the stages work on; compress and measure use them and
#   neither uses the other;
# - deploy is above measure, not beside it: export, validation and the variants open sessions
#   through measure/ort_runner.py, and the bench, which must run where only onnxruntime is
#   installed, never imports deploy (whose exporter needs optimum, transformers and torch);
# - stages call all of the above; executors run stages, so stages never import executors;
# - report reads the records (and measure's statistics); pipeline and preflight chain and check
#   the stages; cli is the thin verbs on top.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__init__", "errors", "fsutil", "progress", "providers", "records", "manifest", "plotting"),
    ("config",),
    ("data", "models", "tasks"),
    ("compress", "measure"),
    ("deploy",),
    ("stages",),
    ("executors",),
    ("report",),
    ("pipeline", "preflight"),
    ("cli",),
)
LAYER = {name: level for level, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(name: str) -> str:
    """The module an import names: the longest prefix of `a.b.c` that is a module here, so
    `from asc_deploy.report import tables` is report/tables.py and `from asc_deploy.executors
    import open_executor` is executors/__init__.py. A package's __init__ counts only when named
    like that: every import of a submodule also runs it, but counting those edges would make
    each package that re-exports its submodules a cycle with them."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _base(module: str, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _imports(module: str) -> set[tuple[str, int]]:
    """(imported module of this package, line) for every import in `module`."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, node)
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                target = _resolve(name)
                if target != module:
                    found.add((target, node.lineno))
    return found


GRAPH = {module: _imports(module) for module in MODULES}


def _layer_name(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def _reachable(start: str, graph: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for child in graph[todo.pop()] - seen:
            seen.add(child)
            todo.append(child)
    return seen


def _cycle_groups(graph: dict[str, set[str]]) -> list[set[str]]:
    """Groups of modules that all reach each other (each holds a cycle); the graph is small."""
    reach = {module: _reachable(module, graph) for module in graph}
    groups = {
        frozenset(other for other in reach[module] if module in reach[other])
        for module in graph
        if module in reach[module]
    }
    return sorted((set(group) for group in groups), key=min)


def _cycle_through(start: str, graph: dict[str, set[str]], members: set[str]) -> list[str]:
    """A shortest path start -> ... -> start inside one group."""
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node] & members):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if child not in previous:
                previous[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is on no cycle")


def test_every_package_has_a_layer():
    unplaced = sorted({_layer_name(m) for m in MODULES} - set(LAYER))
    assert not unplaced, f"add {unplaced} to LAYERS in {Path(__file__).name}"


def test_no_import_cycle():
    graph = {module: {target for target, _ in edges} for module, edges in GRAPH.items()}
    cycles = [
        " -> ".join(_cycle_through(min(group), graph, group))
        + f"  (all of {', '.join(sorted(group))} reach each other)"
        for group in _cycle_groups(graph)
    ]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_import_goes_up_the_layers():
    upward = [
        f"{module}:{line} imports {target} ({_layer_name(module)} is below {_layer_name(target)})"
        for module, edges in sorted(GRAPH.items())
        for target, line in sorted(edges, key=lambda edge: edge[1])
        if LAYER[_layer_name(target)] > LAYER[_layer_name(module)]
    ]
    assert not upward, "upward imports:\n" + "\n".join(upward)
