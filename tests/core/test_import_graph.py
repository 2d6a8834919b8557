"""tl_core's modules import each other without cycles, counting the imports inside functions too:
a cycle hidden in a function works until someone moves the import to the top of the file."""

from __future__ import annotations

import ast
from pathlib import Path

import tl_core

PACKAGE_DIR = Path(tl_core.__file__).parent


def _module_name(path: Path) -> str:
    parts = ["tl_core", *path.relative_to(PACKAGE_DIR).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The tl_core modules ``name`` imports anywhere in its file (module level and in functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # ``from . import events`` and ``from .data import cache`` import those submodules
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {module for module in found if module in known and module != name}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    assert "tl_core.errors" in graph["tl_core.config"]  # module level, relative
    assert "tl_core.data" in graph["tl_core.cli.data_commands"]  # inside a function
    assert "tl_core.config" in graph["tl_core.data.augment"]  # two dots


def test_find_cycle_reports_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_tl_core_imports_are_acyclic():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# The wings, lowest first: a module imports from its own wing or a lower one, never a higher one.
# The ground (errors, events, config, settings, workspace, atomic, runs, limits, ...) is the
# top-level modules of tl_core; every wing is a sub-package. docs/ARCHITECTURE.md draws the same.
WINGS = ["ground", "data", "model", "evaluation", "training", "jobs", "classroom", "experiments", "export", "cli"]
MAX_LEVELS = 11


def wing_of(module: str) -> str:
    if module == "tl_core.__main__":  # ``python -m tl_core``: the command line's entry point
        return "cli"
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (PACKAGE_DIR / parts[1]).is_dir()):
        return parts[1]
    return "ground"


def levels(graph: dict[str, set[str]]) -> dict[str, int]:
    """A module's level: 1 when it imports no tl_core module, else one more than its highest import."""
    found: dict[str, int] = {}

    def level(node: str) -> int:
        if node not in found:
            found[node] = 1 + max((level(nxt) for nxt in graph[node]), default=0)
        return found[node]

    for node in graph:
        level(node)
    return found


def test_every_sub_package_is_a_wing_and_there_are_at_least_five():
    packages = {wing_of(name) for name in import_graph()} - {"ground"}
    assert packages == set(WINGS) - {"ground"}, "a new sub-package goes into WINGS at its place"
    assert len(packages) >= 5


def test_no_module_imports_from_a_higher_wing():
    rank = {wing: i for i, wing in enumerate(WINGS)}
    upward = sorted(f"{a} ({wing_of(a)}) imports {b} ({wing_of(b)})"
                    for a, targets in import_graph().items() for b in targets
                    if rank[wing_of(b)] > rank[wing_of(a)])
    assert not upward, "imports that run up the wings:\n" + "\n".join(upward)


def test_the_import_graph_is_shallow():
    graph = import_graph()
    assert find_cycle(graph) is None
    found = levels(graph)
    deepest = max(found, key=found.get)
    chain = [deepest]
    while graph[chain[-1]]:
        chain.append(max(graph[chain[-1]], key=found.get))
    assert found[deepest] <= MAX_LEVELS, f"{found[deepest]} levels: " + " -> ".join(chain)


def test_levels_and_wings_are_measured_as_said():
    assert levels({"a": {"b"}, "b": {"c"}, "c": set()}) == {"a": 3, "b": 2, "c": 1}
    assert wing_of("tl_core.errors") == "ground"
    assert wing_of("tl_core.model") == "model" and wing_of("tl_core.model.registry") == "model"
