"""The shape of the code: components are the library, flows only wire, serving needs no Prefect."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.unit.imports import ROOT, closure, cycles, external_imports, module_files, project_edges

ORCHESTRATION = {"prefect", "prefect_dask"}


def test_components_import_neither_flows_nor_prefect() -> None:
    modules = module_files()
    edges = project_edges(modules)
    wrong = {
        name: sorted(t for t in edges[name] if t == "flows" or t.startswith("flows."))
        + sorted(external_imports([name], modules) & ORCHESTRATION)
        for name in modules
        if name.startswith("components")
    }
    assert not {name: found for name, found in wrong.items() if found}


def test_no_import_cycles() -> None:
    assert cycles(project_edges(module_files())) == []


def test_flows_holds_only_flows() -> None:
    """Every module in flows/ defines a Prefect flow, or is flows/__init__ or the deployments' definition."""
    without_flow = []
    for path in sorted((ROOT / "flows").glob("*.py")):
        if path.name in {"__init__.py", "deploy.py"}:
            continue
        decorators = [
            d
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef)
            for d in node.decorator_list
        ]
        names = {ast.unparse(d.func if isinstance(d, ast.Call) else d) for d in decorators}
        if "flow" not in names:
            without_flow.append(path.name)
    assert without_flow == []


def test_web_demo_and_ser_predict_need_no_prefect_by_their_imports() -> None:
    modules = module_files()
    edges = project_edges(modules)
    demo = closure(["app.demo"], edges)
    assert not external_imports(demo, modules) & ORCHESTRATION
    # ser predict: cli's module-level imports plus those inside the predict command
    tree = ast.parse((ROOT / "cli.py").read_text())
    command = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "predict_cmd")
    names = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for part in [*[n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)], command]
        for node in ast.walk(part)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    reached = closure([n for n in names if n and n.split(".")[0] in {"components", "flows"}], edges)
    assert not [n for n in reached if n == "flows" or n.startswith("flows.")]
    assert not external_imports(reached, modules) & ORCHESTRATION
    assert not {n.split(".")[0] for n in names} & ORCHESTRATION


def test_ser_predict_does_not_load_prefect_at_run_time() -> None:
    """The same, checked on a real interpreter: ``ser predict --help`` loads no Prefect module."""
    code = (
        "import sys; from typer.testing import CliRunner; import cli;"
        "r = CliRunner().invoke(cli.app, ['predict', '--help']); assert r.exit_code == 0, r.output;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'prefect_dask', 'flows')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
