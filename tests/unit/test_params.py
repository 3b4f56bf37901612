"""params.yaml and dvc.yaml agree, every setting is read somewhere (SpeechBrain-style check), and a
bad setting is refused at load with one line naming the key."""

import os
import re
import subprocess
import sys
from typing import get_args

import pytest
import yaml

from components.errors import SerError
from components.models import MODEL_KINDS, check_model_sections
from components.settings import MODEL_KINDS as SETTINGS_KINDS
from components.settings import FeatureSet, Settings, load_params, load_settings
from tests.conftest import ROOT
from tests.unit.test_dvc_stages import EXECUTION_ONLY

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
    from components.models.ensemble import MEMBER_KEYS

    params = load_params(ROOT / "params.yaml")  # ensemble members resolved from their names
    for name in MODEL_SECTIONS:
        section = params[name]
        build_model(section["kind"], {k: v for k, v in section.items() if k not in MEMBER_KEYS})


def test_every_leaf_key_is_read_by_the_code():
    leaves = {
        key
        for key in flat_keys(PARAMS)
        if not isinstance(_lookup(key), dict) and key.split(".")[0] not in MODEL_SECTIONS
    }
    # read as a typed attribute (settings.retrain.schedule) or by name (a dict key, a GE argument)
    unread = sorted(
        key
        for key in leaves
        if not re.search(rf"[\"']{key.rsplit('.', 1)[-1]}[\"']|\.{key.rsplit('.', 1)[-1]}\b", SOURCES)
    )
    assert not unread, f"params.yaml keys no code reads: {unread}"


# Sections read by a Prefect flow around `dvc repro`, not by a stage: changing them must re-run nothing.
OUTSIDE_STAGES = {"retrain"}


def test_every_leaf_key_is_declared_by_the_stage_that_reads_it():
    declared = {key for stage in DVC["stages"].values() for key in stage.get("params", [])} | OUTSIDE_STAGES
    declared |= EXECUTION_ONLY  # how the work runs: deliberately declared by no stage
    leaves = {key for key in flat_keys(PARAMS) if not isinstance(_lookup(key), dict)}
    # a declared key covers its subtree, as in DVC (train.quick covers train.quick.models)
    parts = {key: key.split(".") for key in leaves}
    missing = sorted(
        k for k, p in parts.items() if not any(".".join(p[:i]) in declared for i in range(1, len(p) + 1))
    )
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


# Typed settings: params.yaml as shipped loads; each mistake is one line naming the file and key.


def test_params_as_shipped_load_with_ensemble_members_resolved():
    settings = load_settings(ROOT / "params.yaml")
    assert settings.featurize.n_fft == PARAMS["featurize"]["n_fft"]
    assert settings.tracking.champion_uri == f"models:/{PARAMS['tracking']['model_name']}@champion"
    params = load_params(ROOT / "params.yaml")
    members = params["ensemble_compare"]["members"]
    assert PARAMS["ensemble_compare"]["members"] == list(members)  # names in params.yaml ...
    assert members["svm"] == PARAMS["svm"]  # ... the sections they name downstream
    assert Settings.model_validate(params).as_params() == params  # a flow given the dict gets it checked


def test_feature_set_choices_are_the_extractors():
    from components.features.sets import FEATURE_SETS

    assert get_args(FeatureSet) == FEATURE_SETS


def _write(tmp_path, text: str):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


SHIPPED = (ROOT / "params.yaml").read_text()
BROKEN = {  # case: (edit of the shipped text, the message after "<file>: ")
    "missing section": (
        lambda t: re.sub(r"\ntrain:\n(  .*\n)+", "\n", t),
        "missing section 'train'",
    ),
    "misspelled key": (
        lambda t: t.replace("  n_fft: 1024", "  n_fftt: 1024"),
        "unknown key featurize.n_fftt (known: feature_sets, n_jobs, n_fft, hop_length, ",
    ),
    "text for a number": (
        lambda t: t.replace("  n_fft: 1024", "  n_fft: abc"),
        "featurize.n_fft: expected an integer, got 'abc'",
    ),
    "negative clip length": (
        lambda t: re.sub(r"clip_dur: [0-9.]+", "clip_dur: -1.0", t),
        "preprocess.clip_dur: must be greater than 0, got -1.0",
    ),
    "unknown model kind": (
        lambda t: t.replace("kind: rf", "kind: forest"),
        "rf.kind: unknown model kind 'forest' (known: rf, svm, logreg, mlp, cnn, cnn_lstm, cnn_gru, "
        "ensemble)",
    ),
    "unknown model setting": (
        lambda t: t.replace("  n_estimators:", "  n_estimator:"),
        "rf: unknown parameter(s) n_estimator; RandomForestClassifier takes",
    ),
    "model setting of the wrong type": (
        lambda t: t.replace("  C: 10.0", "  C: ten", 1),
        "svm: The 'C' parameter of SVC must be a float in the range (0.0, inf]. Got 'ten' instead.",
    ),
    "unknown ensemble member": (
        lambda t: t.replace("members: [svm, logreg_compare]", "members: [svm, logreg_comp]"),
        "ensemble_compare.members: no model section 'logreg_comp' (known: ",
    ),
    "unknown section": (
        lambda t: t.replace("\nfeaturize:\n", "\nfeaturise:\n", 1),
        "unknown section 'featurise' (known: ingest, preprocess, validate, featurize, ",
    ),
    "unknown protocol": (
        lambda t: t.replace("{protocol: random, subset: all}", "{protocol: randm, subset: all}"),
        "evaluate.runs.2.protocol: must be 'actor-kfold', 'random' or 'holdout', got 'randm'",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_bad_setting_is_one_line_naming_the_key(tmp_path, case):
    edit, expected = BROKEN[case]
    text = edit(SHIPPED)
    assert text != SHIPPED, "the edit no longer applies to params.yaml"
    path = _write(tmp_path, text)
    with pytest.raises(SerError) as caught:
        settings = load_settings(path)
        check_model_sections(settings.models, str(path))  # where models are built: train, evaluate
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {expected}"), message


def test_old_inline_members_and_weights_by_position_still_load(tmp_path):
    inline = (
        "  members:\n"
        "    svm: {kind: svm, features: [handmade, egemaps], C: 10.0}\n"
        "    logreg_compare: {kind: logreg, features: [handmade, egemaps, compare], C: 0.01}\n"
    )
    old = load_params(_write(tmp_path, SHIPPED.replace("  members: [svm, logreg_compare]\n", inline)))
    assert old == load_params(ROOT / "params.yaml")
    names = "members: [svm, logreg_compare]"
    weighted = SHIPPED.replace(names, f"{names}\n  weights: [2, 1]")
    params = load_params(_write(tmp_path, weighted))
    assert params["ensemble_compare"]["weights"] == {"svm": 2.0, "logreg_compare": 1.0}
    short = SHIPPED.replace(names, f"{names}\n  weights: [2]")
    with pytest.raises(SerError, match=r"ensemble_compare\.weights: 1 weight\(s\) for 2 member\(s\)"):
        load_settings(_write(tmp_path, short))


def test_a_stage_with_a_broken_params_file_exits_with_one_line(tmp_path):
    _write(tmp_path, SHIPPED.replace("  n_fft: 1024", "  n_fft: abc"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "flows.featurize"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == "error: params.yaml: featurize.n_fft: expected an integer, got 'abc'"


def test_every_flow_has_a_typed_parameter_form():
    """Prefect builds each flow's UI form from its type hints; settings are typed, not dicts."""
    from prefect.utilities.callables import parameter_schema

    from flows.evaluate import evaluate_version
    from flows.featurize import featurize_stage
    from flows.ingest import ingest
    from flows.predict_batch import predict_batch
    from flows.retrain import retrain
    from flows.train import train_stage
    from flows.validate import validate
    from flows.wav2vec2 import wav2vec2_stage

    stages = (ingest, validate, featurize_stage, train_stage, wav2vec2_stage)
    for flow in (*stages, retrain, evaluate_version, predict_batch):
        schema = parameter_schema(flow.fn)
        assert schema.properties, flow.name
    for flow in stages:
        assert parameter_schema(flow.fn).definitions, f"{flow.name}: settings are not a typed model"


def test_settings_know_the_model_kinds_the_models_build():
    assert tuple(SETTINGS_KINDS) == tuple(MODEL_KINDS)
