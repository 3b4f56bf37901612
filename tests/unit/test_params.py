"""params.yaml and dvc.yaml agree, and every setting is read somewhere (SpeechBrain-style check)."""

import re

import yaml

from tests.conftest import ROOT

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
SOURCES = "\n".join(p.read_text() for d in ("components", "flows") for p in (ROOT / d).rglob("*.py"))


def flat_keys(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in tree.items():
        keys.add(prefix + key)
        if isinstance(value, dict):
            keys |= flat_keys(value, f"{prefix}{key}.")
    return keys


def test_every_key_dvc_names_exists_in_params():
    known = flat_keys(PARAMS)
    for name, stage in DVC["stages"].items():
        for key in stage.get("params", []):
            assert isinstance(key, str), f"stage {name}: list params keys one by one"
            assert key in known, f"stage {name} lists {key}, which params.yaml lacks"


MODEL_SECTIONS = {name for name, section in PARAMS.items() if isinstance(section, dict) and "kind" in section}


def test_every_model_section_builds_its_model():
    # A model section's keys are the model's own arguments: build_model rejects unknown ones.
    from components.models import build_model

    for name in MODEL_SECTIONS:
        section = PARAMS[name]
        build_model(section["kind"], {k: v for k, v in section.items() if k not in ("kind", "features")})


def test_every_leaf_key_is_read_by_the_code():
    leaves = {
        key
        for key in flat_keys(PARAMS)
        if not isinstance(_lookup(key), dict) and key.split(".")[0] not in MODEL_SECTIONS
    }
    unread = sorted(key for key in leaves if not re.search(rf"[\"']{key.rsplit('.', 1)[-1]}[\"']", SOURCES))
    assert not unread, f"params.yaml keys no code reads: {unread}"


# Sections read by a Prefect flow around `dvc repro`, not by a stage: changing them must re-run nothing.
OUTSIDE_STAGES = {"retrain"}


def test_every_leaf_key_is_declared_by_the_stage_that_reads_it():
    declared = {key for stage in DVC["stages"].values() for key in stage.get("params", [])} | OUTSIDE_STAGES
    leaves = {key for key in flat_keys(PARAMS) if not isinstance(_lookup(key), dict)}
    missing = sorted(k for k in leaves if k not in declared and k.split(".")[0] not in declared)
    assert not missing, f"params.yaml keys no dvc.yaml stage declares: {missing}"


def test_stages_are_named_alike_everywhere():
    for name in DVC["stages"]:
        assert (ROOT / "flows" / f"{name}.py").exists(), f"stage {name} has no flows/{name}.py"
        assert name in PARAMS, f"stage {name} has no params.yaml section"


def test_sections_outside_the_stages_have_a_flow_of_their_name():
    for name in OUTSIDE_STAGES:
        assert name in PARAMS and name not in DVC["stages"]
        assert (ROOT / "flows" / f"{name}.py").exists(), f"section {name} has no flows/{name}.py"


def _lookup(dotted: str):
    node = PARAMS
    for part in dotted.split("."):
        node = node[part]
    return node
