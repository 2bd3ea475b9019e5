"""The package's imports form no circle (imports under TYPE_CHECKING excepted; imports inside functions count).

Walks every module of minineo/ with `ast`: `import a.b` and `from a.b import c` are edges to the module a.b,
or to a.b.c where c is itself a module. A package's `__init__` is the module `a.b`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import minineo

PACKAGE = Path(minineo.__file__).parent


def module_names() -> dict[str, tuple[Path, bool]]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(name: str, path: Path, is_package: bool, modules: dict) -> set[str]:
    here = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = ".".join(here[: len(here) - child.level + 1] + [child.module or ""]).strip(".") \
                    if child.level else child.module
                for alias in child.names:
                    found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, is_package, modules) for name, (path, is_package) in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_finder_sees_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_the_package():
    graph = import_graph()
    assert "minineo.forward.model" in graph and "minineo.record.cache" in graph["minineo.forward.model"]
    assert "minineo.cli.shared" in graph["minineo.cli.run"]


def test_no_import_circles_in_minineo():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_no_command_module_imports_another():
    graph = import_graph()
    helpers = {"minineo.cli", "minineo.cli.shared", "minineo.cli.display", "minineo.cli.plots", "minineo.cli.circuit_plot"}
    commands = {name for name in graph if name.startswith("minineo.cli.") and name not in helpers}
    assert "minineo.cli.run" in commands
    for name in commands:
        assert not graph[name] & commands, (name, graph[name] & commands)


def test_nothing_imports_the_command_line():
    graph = import_graph()
    for name, deps in graph.items():
        if not name.startswith("minineo.cli") and name != "minineo.__main__":
            assert not any(d.startswith("minineo.cli") for d in deps), (name, deps)


def test_the_validator_and_the_old_paths_sit_at_the_bottom():
    """minineo.checks (every entry point calls it) imports only minineo.errors; minineo.moved imports no minineo
    module (its table names the moved modules as strings, imported only when an old path is used)."""
    graph = import_graph()
    assert graph["minineo.checks"] <= {"minineo.errors"}, graph["minineo.checks"]
    assert graph["minineo.moved"] == set(), graph["minineo.moved"]
    assert "minineo.checks" in graph["minineo.forward.model"] and "minineo.checks" in graph["minineo.cli.shared"]
