"""The project's import graph, read from the source (no module is imported).

Every ``import`` statement counts, those inside functions too: a lazy import still runs when
its function does, so it still couples the modules and still belongs in a stage's deps.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("components", "flows")
SINGLE_FILES = ("cli.py", "app/demo.py")
CODE_ROOTS = ("components", "flows", "cli.py")  # what a stage's code deps may name


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Every project module by dotted name (packages by their own name, from ``__init__.py``)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    for single in SINGLE_FILES:
        modules[single.removesuffix(".py").replace("/", ".")] = root / single
    return modules


def imported_names(path: Path) -> set[str]:
    """Dotted names a file imports (``a.b`` and ``a.b.c`` for ``from a.b import c``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def parents(name: str) -> list[str]:
    """The packages whose ``__init__`` runs before ``name``: ``a``, ``a.b`` for ``a.b.c``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def project_edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Each project module's directly imported project modules (the most specific one an import names)."""
    edges = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_names(path):
            # the most specific project module named: ``from a.b import c`` is a.b.c when c is a module
            known = [candidate for candidate in (*parents(imported), imported) if candidate in modules]
            if known and known[-1] != name:
                targets.add(known[-1])
        edges[name] = targets
    return edges


def closure(start: Iterable[str], edges: dict[str, set[str]]) -> set[str]:
    """Every project module reachable from ``start``, the start modules and their packages included."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        if name not in seen and name in edges:
            seen.add(name)
            # importing a.b.c runs a/__init__ and a/b/__init__ first
            todo.extend([*parents(name), *edges[name]])
    return seen


def external_imports(names: Iterable[str], modules: dict[str, Path]) -> set[str]:
    """Top-level third-party packages the given project modules import."""
    found = set()
    for name in names:
        for imported in imported_names(modules[name]):
            top = imported.split(".")[0]
            if top not in PACKAGES and top not in {"cli", "app"}:
                found.add(top)
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), i.e. import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def stage_code(command: str, modules: dict[str, Path], root: Path = ROOT) -> list[str]:
    """The files of every project module a stage's ``python -m flows.X`` command imports, sorted."""
    start = command.removeprefix("python -m ").strip()
    names = closure([start], project_edges(modules))
    return sorted(str(modules[name].relative_to(root)) for name in names)


def write_dvc_deps(path: Path = ROOT / "dvc.yaml") -> list[str]:
    """Rewrite each stage's code deps in dvc.yaml to its import closure; other lines stay as they are.

    Returns:
        The stages whose deps changed.
    """
    import yaml

    stages = yaml.safe_load(path.read_text())["stages"]
    modules = module_files()
    lines, out, changed = path.read_text().splitlines(keepends=True), [], []
    stage, in_deps = None, False
    for line in lines:
        if (match := re.fullmatch(r"  (\w+):\s*\n", line)) and match.group(1) in stages:
            stage, in_deps = match.group(1), False
        elif stage and re.fullmatch(r"    deps:.*\n", line):
            in_deps = True
            out.append(line)
            old = [dep["path"] if isinstance(dep, dict) else dep for dep in stages[stage]["deps"]]
            code = stage_code(stages[stage]["cmd"], modules)
            if [d for d in old if d.split("/")[0] in CODE_ROOTS] != code:
                changed.append(stage)
            out.extend(f"      - {dep}\n" for dep in old if dep.split("/")[0] not in CODE_ROOTS)
            out.extend(f"      - {dep}\n" for dep in code)
            continue
        elif in_deps and re.fullmatch(r"      - .*\n", line):
            continue  # replaced above
        else:
            in_deps = False
        out.append(line)
    path.write_text("".join(out))
    return changed


if __name__ == "__main__":
    print("dvc.yaml: code deps rewritten for", ", ".join(write_dvc_deps()) or "no stage (all current)")
