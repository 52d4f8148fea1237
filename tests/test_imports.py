"""The module graph: no import cycle among kprl's modules, and every module imports on its own.

A cycle is what once forced ~40 imports into function bodies; these tests keep the graph a tree of rooms (see
docs/architecture.md). Function-local imports remain only where a comment says why (an optional dependency such as
Ray, W&B or Gymnasium; matplotlib's backend; TensorBoard's import time; the lazy API of ``import kprl``).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import kprl

PACKAGE = Path(kprl.__file__).resolve().parent
NOT_IMPORTABLE_ALONE = {"kprl.__main__"}  # runs the command line when imported


def module_names() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _is_type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported: module level, inside top-level try/if (not TYPE_CHECKING)."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, (ast.Try, ast.If)) and not _is_type_checking(node):
            for block in ("body", "orelse", "finalbody", "handlers"):
                stack.extend(getattr(node, block, []))
        elif isinstance(node, ast.ExceptHandler):
            stack.extend(node.body)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the kprl modules its top-level imports name."""
    modules = set(module_names())
    graph: dict[str, set[str]] = {}
    for name in modules:
        file = PACKAGE.parent / Path(*name.split("."))
        path = file / "__init__.py" if file.is_dir() else file.with_suffix(".py")
        edges: set[str] = set()
        for node in _top_level_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name in modules)
            elif node.module and node.level == 0 and node.module.startswith("kprl"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    edges.add(sub if sub in modules else node.module)
        graph[name] = edges - {name, "kprl"}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_module_graph_has_no_cycle():
    graph = import_graph()
    assert "kprl.cli" in graph and graph["kprl.cli"], "the graph was not built"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


_IMPORT_EACH = """
import importlib, json, sys
failed = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m == "kprl" or m.startswith("kprl.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(failed))
"""


def _function_local_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    top = {id(node) for node in _top_level_imports(tree)}
    type_checking = {id(n) for block in tree.body if _is_type_checking(block) for n in ast.walk(block)}
    return [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
            and id(node) not in top and id(node) not in type_checking]  # fmt: skip


def test_function_local_imports_say_why():
    """Outside the command line (which imports each command's code when it runs), an import inside a function
    has a comment on its line or just above it saying why it is not at the top of the file."""
    silent = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "cli.py":
            continue
        lines = path.read_text().splitlines()
        for node in _function_local_imports(ast.parse("\n".join(lines))):
            nearby = lines[max(0, node.lineno - 4) : node.end_lineno]
            if not any("#" in line for line in nearby):
                silent.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not silent, "function-local imports without a reason:\n" + "\n".join(silent)


def test_every_module_imports_on_its_own():
    names = [n for n in module_names() if n not in NOT_IMPORTABLE_ALONE]
    if importlib.util.find_spec("gymnasium") is None:
        names.remove("kprl.envs.gymnasium_env")  # needs the optional kprl[gym]
    done = subprocess.run([sys.executable, "-c", _IMPORT_EACH, json.dumps(names)], capture_output=True, text=True,
                          timeout=120, cwd=PACKAGE.parent)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    failed = json.loads(done.stdout.strip().splitlines()[-1])
    assert not failed, failed
