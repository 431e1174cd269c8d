"""The packages' layering, read from their source: no import cycles, no upward imports.

Every import counts, those inside functions too (a deferred import still ties the modules
together); only imports for type checkers (``if TYPE_CHECKING:``) are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agents", "testbed", "topologies")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _type_checking_only(tree: ast.AST) -> set[ast.AST]:
    skip: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(n for stmt in node.body for n in ast.walk(stmt))
    return skip


def _imports(path: Path) -> set[str]:
    """Every module name ``path`` imports (absolute, as written)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_only(tree)
    names = set()
    for node in ast.walk(tree):
        if node in skip:
            continue
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.update(f"{node.module}.{a.name}" for a in node.names)
            names.add(node.module)
    return names


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        deps = set()
        for name in _imports(path):
            while name and name not in mods:  # `from pkg import submodule` or a symbol
                name = name.rpartition(".")[0]
            if name and name != mod and not mod.startswith(name + "."):
                deps.add(name)  # a package's own __init__ is not a dependency of its members
        graph[mod] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_a_cycle_is_found():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_upward_imports():
    """The agents stand alone (no testbed, topologies or Mininet), topologies never need the
    testbed, and results never reach back into the lab, the runner or the measurements."""
    forbidden = {  # importer -> what it must not import
        "agents": ("testbed", "topologies", "mininet"),
        "topologies": ("testbed",),
        "testbed.results": ("testbed.lab", "testbed.run", "testbed.measure", "testbed.labctl"),
    }
    wrong = [(mod, name) for mod, path in _modules().items() for name in _imports(path)
             for importer, banned in forbidden.items()
             if (mod == importer or mod.startswith(importer + "."))
             and any(name == b or name.startswith(b + ".") for b in banned)]
    assert wrong == []
