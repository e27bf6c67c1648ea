"""The package's modules import each other one way only: no cycle, counting imports inside
functions and under TYPE_CHECKING (a cycle there is still a knot in the design)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "freebits_cli"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """Every freebits_cli module `path` imports, anywhere in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports the module pkg.mod when there is one.
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names
            ]
        found |= {t for t in targets if t in modules and t != name}
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in files}
    graph = {module_name(p): imports(p, modules) for p in files}
    assert graph["freebits_cli.report.figures"], "the scan sees imports"
    assert "freebits_cli.spec" in graph["freebits_cli.sweep.executor"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_scan_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


#: What each layer (a folder of the package, or a module at its root) may import beside itself:
#: the layers below it. Any layer may import the package itself (`__version__`; its API names
#: load lazily, unseen here).
LAYERS: dict[str, set[str]] = {
    "package": set(),
    "errors": set(),
    "schema": set(),
    "spec": {"errors", "schema"},
    "data": {"errors", "schema", "spec"},
    "models": {"errors", "schema", "spec", "data"},
    "results": {"errors", "schema", "spec"},
    "engine": {"errors", "schema", "spec", "data", "models", "results"},
    "export": {"errors", "schema", "spec", "results"},
    "sweep": {"errors", "schema", "spec", "data", "models", "results", "engine", "export"},
    "report": {"errors", "schema", "spec", "results"},
    "api": {"errors", "schema", "spec", "results", "sweep"},
    "cli": {
        "errors",
        "schema",
        "spec",
        "data",
        "models",
        "results",
        "engine",
        "export",
        "sweep",
        "report",
    },
}


def layer(module: str) -> str:
    """`freebits_cli.engine.step` -> `engine`; `freebits_cli.__main__` is the command line's."""
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    return "cli" if parts[1] == "__main__" else parts[1]


def test_layers_import_only_the_layers_below_them() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in files}
    assert {layer(m) for m in modules} == set(LAYERS), "every folder has its place in LAYERS"
    wrong = sorted(
        f"{module} imports {target}"
        for path in files
        for module in [module_name(path)]
        for target in imports(path, modules)
        if layer(target) not in {layer(module), "package", *LAYERS[layer(module)]}
    )
    assert wrong == []
