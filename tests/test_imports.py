"""The package's imports run one way: no circle, module-level or inside a function.

Read from the source (ast), so a circle hidden in a function-level import counts too.
`from package import submodule` counts as an import of the submodule only.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "dfkd"


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
    return name.removesuffix(".__init__")


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dfkd"):
                submodules = {f"{node.module}.{a.name}" for a in node.names} & set(modules)
                deps |= submodules or {node.module}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("dfkd")}
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_reader_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_dfkd():
    graph = import_graph()
    assert "dfkd.cli" in graph and "dfkd.analysis.stats" in graph["dfkd.analysis.study.tables"]
    assert circles(graph) == []


# The layers, bottom first: a module may import its own layer and the layers below, never above.
LAYERS = [
    ("base", ("dfkd", "dfkd.errors", "dfkd.schema", "dfkd.device", "dfkd.io")),
    ("networks", ("dfkd.models", "dfkd.augment", "dfkd.training")),
    ("registries", ("dfkd.sources", "dfkd.synthesis")),
    ("stages", ("dfkd.stages",)),
    ("analysis", ("dfkd.analysis",)),
    ("config", ("dfkd.config", "dfkd.config_checks", "dfkd.slices")),
    ("tools", ("dfkd.tools",)),
    ("cli", ("dfkd.cli",)),
]


def layer_of(module: str) -> int:
    """The index of the layer whose longest prefix names the module."""
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best is not None, f"{module} is in no layer: add it to tests/test_imports.py's LAYERS"
    return best


def test_every_module_has_a_layer_and_no_import_goes_up():
    graph = import_graph()
    upward = [f"{module} ({LAYERS[layer_of(module)][0]}) imports {dep} ({LAYERS[layer_of(dep)][0]})"
              for module, deps in sorted(graph.items()) for dep in sorted(deps) if layer_of(dep) > layer_of(module)]
    assert upward == []
