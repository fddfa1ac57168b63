"""The package's import graph has no cycles, counting imports inside functions (which hide a cycle from Python).

(That the library never imports the command line is tests/test_errors.py's.)
"""

from __future__ import annotations

import ast
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import inspector

PACKAGE = Path(inspector.__file__).parent


def module_files(package: Path) -> dict[str, Path]:
    """Every module of `package` by dotted name (a package by its own name, for its `__init__.py`)."""
    modules: dict[str, Path] = {}
    for path in sorted(package.rglob("*.py")):
        parts = [package.name, *path.relative_to(package).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def import_graph(package: Path) -> dict[str, dict[str, int]]:
    """For each module, the modules of `package` it imports anywhere in its source (module level or inside a
    function), each with the line of its first such import."""
    modules = module_files(package)

    def owner(name: str) -> str | None:  # `pkg.mod.attr` -> `pkg.mod`: the module that a dotted name lives in
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        here = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                named = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join([*parent, *([node.module] if node.module else [])])
                named = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            for name in named:
                target = owner(name)
                if target is not None and target != module:
                    edges.setdefault(target, node.lineno)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle through each strongly connected group of two or more modules, as `a -> b -> ... -> a`."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        order[module] = low[module] = len(order)
        stack.append(module)
        on_stack.add(module)
        for target in graph[module]:
            if target not in order:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], order[target])
        if low[module] == order[module]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(group)

    for module in sorted(graph):
        if module not in order:
            visit(module)
    return [_cycle_in(group, graph) for group in groups]


def _cycle_in(group: set[str], graph: dict[str, dict[str, int]]) -> list[str]:
    """A shortest cycle through the group's first module (breadth first, within the group)."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for module in frontier:
            for target in sorted(graph[module]):
                if target == start:
                    return [*paths[module], start]
                if target in group and target not in paths:
                    paths[target] = [*paths[module], target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle in {sorted(group)}")  # a strongly connected group always has one


def describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    return " -> ".join(
        f"{module} (line {graph[module][target]})" for module, target in pairwise(cycle)
    ) + f" -> {cycle[-1]}"


def test_the_package_has_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert "inspector.speedups" in graph["inspector.backends.hf"]  # an import inside a method counts
    assert [describe(cycle, graph) for cycle in cycles(graph)] == []


def test_a_cycle_through_an_import_inside_a_function_is_found_and_named(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("def f():\n    from ..c import helper\n    return helper\n")
    (package / "c.py").write_text("import os\n\n\ndef helper():\n    import pkg.a\n")
    (package / "d.py").write_text("from pkg import a, c\n")  # imports into the cycle, is not part of it
    graph = import_graph(package)
    assert [describe(cycle, graph) for cycle in cycles(graph)] == [
        "pkg.a (line 1) -> pkg.sub.b (line 2) -> pkg.c (line 5) -> pkg.a"
    ]


def test_inference_never_imports_training():
    """Training builds on inference (it loads models through the backends, scores with the scan's scorer), never
    the other way round: a helper both need lives below both (e.g. `inspector.modelparts`)."""
    command_line = {"inspector.cli", "inspector.train_cli", "inspector.__main__"}
    graph = import_graph(PACKAGE)
    offenders = {
        module: sorted(target for target in targets if target.startswith("inspector.training"))
        for module, targets in graph.items()
        if not module.startswith("inspector.training") and module not in command_line
    }
    assert {module: found for module, found in offenders.items() if found} == {}


def test_the_command_line_starts_without_the_database_layer_pil_or_a_model_backend():
    """`inspector --help` imports only what the options need: ScanConfig's defaults come from the light
    `inspector.scan_config`, not `inspector.scan` (which pulls in SQLAlchemy, PIL and the backends)."""
    heavy = ["sqlalchemy", "PIL", "torch", "transformers", "pandas", "inspector.scan", "inspector.store"]
    code = f"import sys, inspector.cli; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_one_place_writes_a_scans_report():
    """Every scan engine (one process, one per GPU, Ray) returns its summary and the caller adds the report and
    metrics through `scan.with_report_and_metrics`; only the `report` command renders one otherwise."""
    callers = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        for function in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(function, ast.FunctionDef):
                for node in ast.walk(function):
                    name = getattr(getattr(node, "func", None), "id", None) or getattr(
                        getattr(node, "func", None), "attr", None
                    )
                    if isinstance(node, ast.Call) and name == "render_report":
                        callers.add((path.relative_to(PACKAGE.parent).as_posix(), function.name))
    assert callers == {("inspector/scan.py", "with_report_and_metrics"), ("inspector/cli.py", "report")}
