"""The package's shape: every module imports on its own, imports form no cycle (function-level
imports included), nothing below the facade imports ``api``, and the CLI talks only to ``api``."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "jobledger"
ENTRY_POINTS = {"jobledger.__main__", "jobledger.cli.__main__"}  # they run the CLI when imported


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TABLE_ENTRY = re.compile(r"jobledger(\.\w+)+:\w+")


def imports_of(name: str) -> set[str]:
    """The jobledger modules ``name`` imports anywhere in its file (top level or inside functions),
    and those a scheme → class table names for ``importlib`` (``"jobledger.stores.azure:AzureStore"``).

    ``from X import y`` counts as an import of ``X.y`` when that is a module, else of ``X``."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target)
        elif isinstance(node, ast.Constant) and isinstance(node.value,
                                                           str) and TABLE_ENTRY.fullmatch(node.value):
            found.add(node.value.partition(":")[0])
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_the_cycle_finders_find_a_cycle_and_only_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a"}}
    assert find_cycle(graph) is None and cycles(graph) == []
    graph["c"] = {"a"}
    assert find_cycle(graph) == ["a", "b", "c", "a"] and cycles(graph) == [{"a", "b", "c"}]


def test_function_level_imports_are_part_of_the_graph():
    assert "jobledger.azure_client" in GRAPH["jobledger.runtimes.kubernetes"]  # imported inside functions
    assert "jobledger.stores.azure" in GRAPH["jobledger.stores"]  # named in its scheme → class table
    assert "jobledger.api" in GRAPH["jobledger.cli.app"]


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (each holds a cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

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
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


# Known cycles still to remove. Empty since the runtime backends import ``runtimes.base`` rather than the
# package that names them in its table (issue 8). This list may only shrink: a new cycle fails, and so
# does an entry that is no longer a cycle.
PENDING_CYCLES: list[set[str]] = []


def test_no_import_cycle_in_the_package():
    for component in cycles(GRAPH):
        sub = {name: GRAPH[name] & component for name in component}
        assert any(component <= pending for pending in PENDING_CYCLES), \
            "import cycle: " + " → ".join(find_cycle(sub) or sorted(component))
    for pending in PENDING_CYCLES:
        still = find_cycle({name: GRAPH.get(name, set()) & pending for name in pending if name in GRAPH})
        assert still, f"no cycle left in {sorted(pending)}: remove it from PENDING_CYCLES"


def test_only_the_cli_imports_the_facade_and_the_cli_imports_only_the_facade_and_render():
    importers = sorted(name for name, deps in GRAPH.items() if "jobledger.api" in deps)
    assert importers and all(name.startswith("jobledger.cli") for name in importers), importers
    allowed = {"jobledger.api", "jobledger.render"}
    for name, deps in GRAPH.items():
        if name.startswith("jobledger.cli"):
            outside = {d for d in deps if not d.startswith("jobledger.cli")} - allowed
            assert not outside, f"{name} bypasses the facade: {sorted(outside)}"


@pytest.mark.parametrize("name", sorted(set(MODULES) - ENTRY_POINTS))
def test_module_imports_alone_in_a_fresh_interpreter(name):
    proc = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr


# What a read command must not load: the facade names these on first use (api._LAZY), so that `status`,
# `list`, `missing` and `sql` start without them.
HEAVY = ("jobledger.registration", "jobledger.validation", "jobledger.sync", "jobledger.resume",
         "jobledger.idempotent", "jobledger.registry", "jobledger.report", "jobledger.runtimes",
         "jobledger.stores", "azure", "kubernetes", "jinja2", "tabulate", "yaml")


@pytest.mark.parametrize("command", [["list"], ["status", "job-00000001"], ["missing", "job-00000001"],
                                     ["sql", "SELECT 1"], ["path"], ["history", "job-00000001"]])
def test_a_read_command_loads_none_of_the_machinery_behind_the_other_commands(tmp_path, command):
    script = ("import sys, runpy\n"
              f"sys.argv = ['jobledger', '--db', {str(tmp_path / 'l.db')!r}, *{command!r}]\n"
              "try:\n    runpy.run_module('jobledger', run_name='__main__')\n"
              "except SystemExit:\n    pass\n"
              f"print(sorted(m for m in sys.modules if m.startswith({HEAVY!r})))\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout + proc.stderr


def test_every_name_the_facade_exports_resolves():
    from jobledger import api
    missing = [name for name in api.__all__ if getattr(api, name, None) is None]
    assert not missing
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        api.nothing_here  # noqa: B018


@pytest.mark.parametrize("script", sorted(p.stem for p in (ROOT / "scripts").glob("*.py")))
def test_every_script_imports(script):
    """Benchmarks and tools under scripts/ are not run by the suite; importing each one at least catches a
    name that moved in the package (bench_mirror once imported pull/push from where they no longer were)."""
    proc = subprocess.run([sys.executable, "-c", f"import {script}"], cwd=ROOT / "scripts", capture_output=True,
                          text=True, env={"PYTHONPATH": f"{ROOT}:{ROOT / 'scripts'}", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr


# Modules may grow past this only with a reason stated here (none has one today).
MAX_MODULE_LINES = 450
LONGER_MODULES_AND_WHY: dict[str, str] = {}


def test_no_module_is_over_the_size_limit():
    too_long = {name: n for name, path in MODULES.items()
                if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
                and name not in LONGER_MODULES_AND_WHY}
    assert not too_long, f"split these modules (or state why not in LONGER_MODULES_AND_WHY): {too_long}"


def architecture_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return readme.split("\n## Architecture\n", 1)[1].split("\n## ", 1)[0]


def test_the_readme_architecture_table_names_every_module_and_nothing_that_is_gone():
    section = architecture_section()
    named = {re.sub(r"(\.py)?/?$", "", name) for name in re.findall(r"`([\w/.]+)`", section)}
    files = {p.relative_to(PACKAGE) for p in PACKAGE.rglob("*.py")} | {Path("schema.sql")}
    unnamed = sorted(str(f) for f in files
                     if f.stem not in ("__init__", "__main__")
                     and not {f.stem, f.name, str(f.with_suffix(""))} & named)
    assert not unnamed, f"modules missing from the README's architecture table: {unnamed}"
    # every row's first cell names something that exists
    for cell in re.findall(r"^\| ([^|]+) \|", section, flags=re.M):
        for name in re.findall(r"`([\w/.]+)`", cell):
            assert (PACKAGE / name).exists() or (PACKAGE / f"{name}.py").exists(), \
                f"the README's architecture table names {name}, which is not in the package"


def test_ctrl_c_while_the_cli_is_imported_ends_in_one_line_and_status_130(tmp_path):
    """A finder that raises KeyboardInterrupt when jobledger.cli is imported stands in for a Ctrl-C that
    arrives during start-up (a real signal would race the import)."""
    code = ("import sys\n"
            "class Interrupt:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'jobledger.cli':\n"
            "            raise KeyboardInterrupt\n"
            "sys.meta_path.insert(0, Interrupt())\n"
            "sys.argv = ['jobledger', 'list']\n"
            "import runpy\n"
            "runpy.run_module('jobledger', run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert (done.returncode, done.stderr, done.stdout) == (130, "interrupted\n", ""), done.stderr
