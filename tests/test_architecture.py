"""The layers keep one direction (docs/architecture.md); no import cycle anywhere; main.py stays thin.

Every ``import`` of the project's packages is read from the source (AST), including imports inside functions:
a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> layer; a module may import its own package and packages of a lower layer only.
LAYERS: dict[str, int] = {
    "core": 0,
    "datamodules": 1,
    "models": 1,
    "retrievals": 1,
    "callbacks": 2,
    "tasks": 3,
    "sweeps": 3,
    "hydra_plugins": 4,
    "main": 5,
}
PACKAGES = tuple(name for name in LAYERS if name != "main")


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the layered packages and main.py."""
    modules = {"main": ROOT / "main.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imported_modules(path: Path, name: str, known: set[str]) -> Iterator[tuple[str, int]]:
    """(project module, line) for every import in ``path``, resolved to the deepest known module."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            parts = target.split(".")
            for end in range(len(parts), 0, -1):
                candidate = ".".join(parts[:end])
                if candidate in known:
                    yield candidate, node.lineno
                    break


def import_graph() -> dict[str, set[tuple[str, int]]]:
    modules = project_modules()
    known = set(modules)
    return {name: set(imported_modules(path, name, known)) for name, path in modules.items()}


def layer(module: str) -> tuple[str, int]:
    top = module.split(".")[0]
    return top, LAYERS[top]


def test_imports_point_down_the_layers() -> None:
    """core <- datamodules, models, retrievals (peers) <- callbacks <- tasks, sweeps <- hydra_plugins <- main."""
    wrong = []
    for module, imports in import_graph().items():
        package, level = layer(module)
        for target, line in sorted(imports):
            other, other_level = layer(target)
            if other != package and other_level >= level:
                wrong.append(f"{module}:{line} imports {target} ({other}, layer {other_level} >= {package}'s {level})")
    assert not wrong, "back or sideways edges:\n" + "\n".join(wrong)


def test_no_import_cycle() -> None:
    """No cycle between modules (Tarjan's strongly connected components over the whole graph)."""
    graph = {module: {target for target, _ in imports if target != module} for module, imports in import_graph().items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checker_sees_a_back_edge(tmp_path: Path) -> None:
    """The resolver finds a lazy import inside a function, a from-import of a module and a relative import."""
    source = tmp_path / "probe.py"
    source.write_text(
        "def f():\n    from models import reader\n    import tasks.fit\n"
        "from datamodules.mrc_formats import load_mrc_examples\n",
        encoding="utf-8",
    )
    found = {t for t, _ in imported_modules(source, "core.probe", {"models", "models.reader", "tasks.fit",
                                                                   "datamodules.mrc_formats"})}
    assert found == {"models", "models.reader", "tasks.fit", "datamodules.mrc_formats"}


def test_main_is_a_thin_entry_point() -> None:
    lines = (ROOT / "main.py").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150


@pytest.mark.parametrize("package", PACKAGES)
def test_modules_stay_small(package: str) -> None:
    """Modules stay under ~400 lines where the split is natural; the few longer ones are listed here."""
    allowed: dict[str, int] = {}
    long = []
    for path in (ROOT / package).rglob("*.py"):
        rel = str(path.relative_to(ROOT))
        count = len(path.read_text(encoding="utf-8").splitlines())
        if count > allowed.get(rel, 450):
            long.append(f"{rel}: {count} lines")
    assert not long, "\n".join(long)
