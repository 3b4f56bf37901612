"""The quick profile: a first `make run` trains every family and registers a champion, in minutes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.settings import apply_profile, load_settings
from tests.conftest import ROOT, make_clone

FAMILIES = {"rf", "cnn", "cnn_lstm", "cnn_gru"}  # forest, CNN, CNN+LSTM, CNN+GRU


def test_the_shipped_quick_profile_trains_each_family_and_the_champion_trimmed():
    configured = load_settings(ROOT / "params.yaml")
    assert configured.train.profile == "quick"  # what a first `make run` gets
    quick = apply_profile(configured)
    kinds = {quick.models[name].kind for name in quick.train.models}
    assert kinds >= FAMILIES
    assert configured.train.models[0] in quick.train.models  # the intended champion
    assert quick.evaluate.runs == configured.evaluate.runs[:1] and quick.evaluate.n_folds == 3
    for name in quick.train.models:
        section = quick.models[name].as_dict()
        assert section.get("epochs", 0) <= 8 and section.get("n_estimators", 0) <= 100, name
    train = configured.train.model_copy(update={"profile": "full"})
    full = apply_profile(configured.model_copy(update={"train": train}))
    assert full.train.models == configured.train.models and full.evaluate == configured.evaluate
    assert full.models["cnn"].as_dict()["epochs"] == configured.models["cnn"].as_dict()["epochs"]


def test_the_quick_profile_caps_ensemble_members_too():
    configured = load_settings(ROOT / "params.yaml")
    members = apply_profile(configured).models["ensemble"].as_dict()["members"]
    assert members["cnn"]["epochs"] == min(8, configured.models["cnn"].as_dict()["epochs"])


def test_a_quick_profile_without_its_section_is_refused(tmp_path):
    from components.errors import SerError

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    del params["train"]["quick"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(SerError, match=r"train\.profile: quick needs a train\.quick section"):
        load_settings(tmp_path / "params.yaml")
    params["train"]["quick"] = {"models": ["rf", "nope"]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(SerError, match=r"train\.quick\.models: no model section 'nope'"):
        load_settings(tmp_path / "params.yaml")


@pytest.mark.slow
def test_dvc_repro_with_the_quick_profile_trains_every_family_and_registers_a_champion(
    tmp_path, mlflow_template
):
    clone = make_clone(tmp_path, mlflow_template)
    params = yaml.safe_load((clone / "params.yaml").read_text())
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"] = shipped["train"]  # the quick profile as shipped
    params["featurize"]["feature_sets"] = ["handmade", "egemaps", "logmel", "compare"]  # the champion's
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_API"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    done = subprocess.run(["dvc", "repro"], cwd=clone, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    train = json.loads((clone / "metrics/train.json").read_text())
    assert train["profile"] == "quick"
    assert {row["model"] for row in train["results"]} == set(shipped["train"]["quick"]["models"])
    assert {(row["protocol"], row["subset"]) for row in train["results"]} == {("actor-kfold", "all")}
    assert train["registry"]["promoted"] is True
    log = done.stdout + done.stderr
    total = len(shipped["train"]["quick"]["models"])
    assert f"train {total}/{total} done:" in log  # the progress lines reach the terminal
