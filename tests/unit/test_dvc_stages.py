"""dvc.yaml cannot drift from the code: each stage's deps cover the modules its command imports,
and its params are exactly keys of params.yaml that can change what it writes.

DVC decides what to re-run from the deps and params a stage declares; a module missing from
``deps`` means an edit to it leaves ``dvc status`` saying up to date, and a settings key that
only says how the work runs (``featurize.n_jobs``) re-runs a stage whose outputs it cannot change.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.unit.imports import CODE_ROOTS, ROOT, closure, module_files, project_edges

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
# How the work runs, not what it produces: listed by no stage, so changing one re-runs nothing.
EXECUTION_ONLY = {
    "validate.n_jobs",
    "featurize.n_jobs",
    "train.n_workers",
    "train.retries",
    "orchestration.task_runner",
    "orchestration.dask_address",
    "orchestration.dask_workers",
    "tracking.http_timeout_s",  # how long a command waits for a tracking server
    "tracking.http_max_retries",
    "tracking.http_backoff_factor",
    "tracking.system_metrics",  # CPU and memory sampled into MLflow while a run trains
}


def stage_modules(stage: str) -> set[Path]:
    """Files of every project module the stage's ``python -m flows.X`` command imports."""
    match = re.fullmatch(r"python -m (flows\.\w+)", STAGES[stage]["cmd"])
    assert match, f"stage {stage}: expected `python -m flows.<stage>`, got {STAGES[stage]['cmd']!r}"
    modules = module_files()
    return {modules[name].relative_to(ROOT) for name in closure([match.group(1)], project_edges(modules))}


def code_deps(stage: str) -> list[Path]:
    """The stage's deps that are code (files or folders under the code roots)."""
    deps = [Path(dep) for dep in STAGES[stage].get("deps", [])]
    return [dep for dep in deps if dep.parts[0] in CODE_ROOTS]


def covered(module: Path, deps: list[Path]) -> bool:
    return any(module == dep or dep in module.parents for dep in deps)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_deps_cover_every_imported_module(stage: str) -> None:
    deps = code_deps(stage)
    missing = sorted(str(m) for m in stage_modules(stage) if not covered(m, deps))
    assert not missing, f"stage {stage}: run `make dvc-deps`, or add to its deps in dvc.yaml:\n" + "\n".join(
        f"      - {m}" for m in missing
    )


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_deps_name_no_module_the_stage_does_not_import(stage: str) -> None:
    modules = stage_modules(stage)
    unused = [str(dep) for dep in code_deps(stage) if not any(covered(m, [dep]) for m in modules)]
    assert not unused, f"stage {stage}: deps it never imports (an edit would re-run it for nothing): {unused}"


def leaf_keys(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in tree.items():
        name = f"{prefix}{key}"
        keys.add(name)
        if isinstance(value, dict) and value and "kind" not in tree:
            keys |= leaf_keys(value, f"{name}.")
    return keys


def test_every_stage_param_exists_and_none_is_execution_only() -> None:
    known = leaf_keys(PARAMS)
    for stage, spec in STAGES.items():
        for key in spec.get("params", []):
            assert key in known, f"dvc.yaml stage {stage}: params key {key} is not in params.yaml"
            assert key not in EXECUTION_ONLY, f"dvc.yaml stage {stage}: {key} changes no output; drop it"
            assert "." in key or key not in {"featurize", "preprocess", "evaluate", "train", "tracking"}, (
                f"dvc.yaml stage {stage}: list the keys of {key} it reads, not the whole section"
            )


def test_every_params_key_is_read_by_the_code() -> None:
    """SpeechBrain's yaml/script consistency check: a key no code names is dead or misspelled."""
    source = "\n".join(
        path.read_text()
        for root in CODE_ROOTS
        for path in ((ROOT / root).rglob("*.py") if (ROOT / root).is_dir() else [ROOT / root])
    )
    unread = []
    for section, values in PARAMS.items():
        for key in values if isinstance(values, dict) else []:
            if not re.search(rf"\b{re.escape(key)}\b", source):
                unread.append(f"{section}.{key}")
    assert not unread, f"params.yaml keys no code reads: {unread}"
