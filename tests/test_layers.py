"""The package's layers point down only: checked on the source, so a change that reaches
around a layer fails here, not in review.

- No import cycles between the package's modules (imports inside functions and under
  ``TYPE_CHECKING`` count: a soft cycle is still a cycle).
- Above the log (``projections``, ``audit``, ``clustering``, ``legacy``, ``cli``,
  ``benchmarks``), nothing reaches the backend through ``store.recorder``.
- ``projections``, ``audit``, ``clustering``, ``legacy`` and ``cli`` never compare a
  value with a dialect name: they ask the store (``eventstore/capabilities.py``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from .conftest import REPO_ROOT

PACKAGES = (
    "eventstore",
    "projections",
    "clustering",
    "audit",
    "legacy",
    "cli",
    "benchmarks",
)
ABOVE_THE_LOG = ("projections", "audit", "clustering", "legacy", "cli", "benchmarks")
NO_DIALECT_NAMES = ("projections", "audit", "clustering", "legacy", "cli")
DIALECT_NAMES = {"sqlite", "postgresql", "postgres"}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(("clusterstore", *parts))] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that ``name`` imports (anywhere in the file); importing a package
    ``__init__`` for one of its submodules counts as importing that submodule only."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
            if subs:
                found.update(subs)
            elif base in known:
                found.add(base)
    found.discard(name)
    return found


def test_no_import_cycles() -> None:
    modules = _modules()
    graph = {m: _imports(m, p, set(modules)) for m, p in modules.items()}
    # a package's __init__ re-exports its modules: edges out of it are not layering
    graph = {m: deps for m, deps in graph.items() if modules[m].name != "__init__.py"}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycles.append([*stack[stack.index(d) :], d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert cycles == []


# The design card's layers (shared/architecture.json) and the imports it never allows.
BACKENDS = ("clusterstore.eventstore.sqlite", "clusterstore.eventstore.postgres")
NEVER = [
    ("projections", "backends", "layers ask the store, never a dialect module"),
    ("audit", "backends", "the audit reads through the store"),
    ("clustering", "backends", "clustering knows no database"),
    ("audit", "projections", "the read-model check is handed in by the caller"),
    ("clustering", "projections", "clustering emits events; projections follow"),
    ("log", "projections", "the log knows nothing of read models"),
    ("log", "cli", "nothing below reaches up"),
    ("projections", "cli", "nothing below reaches up"),
    ("log", "benchmarks", "the core never depends on the harness"),
    ("projections", "benchmarks", "the core never depends on the harness"),
    ("audit", "benchmarks", "the core never depends on the harness"),
    ("log", "audit", "nothing below reaches up"),
    ("log", "clustering", "nothing below reaches up"),
    ("log", "legacy", "nothing below reaches up"),
]


def _layer(module: str) -> str:
    if module in BACKENDS:
        return "backends"
    part = module.split(".")[1] if module.count(".") else ""
    return "log" if part == "eventstore" else part


def test_no_import_the_design_card_forbids() -> None:
    modules = _modules()
    found = [
        f"{m} -> {d}: {why}"
        for m, path in modules.items()
        for d in sorted(_imports(m, path, set(modules)))
        for src, dst, why in NEVER
        if _layer(m) == src and _layer(d) == dst
    ]
    assert found == []


def _source_files(packages: tuple[str, ...]) -> list[Path]:
    return [p for pkg in packages for p in sorted((REPO_ROOT / pkg).rglob("*.py"))]


def test_nothing_above_the_log_reaches_the_recorder() -> None:
    found = [
        f"{path.relative_to(REPO_ROOT)}:{node.lineno}"
        for path in _source_files(ABOVE_THE_LOG)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr == "recorder"
    ]
    assert found == []


def test_no_dialect_name_is_tested_above_the_log() -> None:
    found = [
        f"{path.relative_to(REPO_ROOT)}:{node.lineno}"
        for path in _source_files(NO_DIALECT_NAMES)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Compare | ast.MatchValue)
        and any(isinstance(n, ast.Constant) and n.value in DIALECT_NAMES for n in ast.walk(node))
    ]
    assert found == []


def test_importing_the_cli_does_not_import_the_benchmark_harness(
    subprocess_env: dict[str, str],
) -> None:
    code = (
        "import sys, clusterstore.cli.main\n"
        "print(sorted(m for m in sys.modules if m.startswith('clusterstore.benchmarks')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"
