"""The train flow end to end on a tiny demo corpus: real Prefect engine, real MLflow store."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from components.registry.promote import CHAMPION, PREVIOUS, rollback
from components.settings import load_params
from tests.conftest import ROOT


def tiny_settings() -> dict:
    settings = load_params(ROOT / "params.yaml")
    settings["train"].update(models=["rf", "logreg", "cnn"], n_workers=2, retries=0)
    settings["evaluate"].update(
        runs=[{"protocol": "actor-kfold", "subset": "all"}], n_folds=4, n_val_actors=1
    )
    for name in ("rf", "logreg"):
        settings[name]["features"] = ["handmade"]
    settings["rf"]["n_estimators"] = 50
    settings["cnn"].update(epochs=2, n_filters=16, sequence="logmel")  # the demo fixture has log-mel only
    return settings


@pytest.fixture
def workspace(demo_features, mlflow_server, monkeypatch, prefect_harness):
    monkeypatch.chdir(demo_features)
    return demo_features


def run_train(settings: dict) -> dict:
    from prefect.task_runners import ProcessPoolTaskRunner

    from flows import run_flow
    from flows.train import train_stage

    runner = ProcessPoolTaskRunner(max_workers=settings["train"]["n_workers"])
    return run_flow(train_stage.with_options(task_runner=runner), settings=settings)


def test_train_logs_every_model_registers_and_gates_the_champion(workspace, mlflow_server):
    """Tracking and registration over HTTP against a real ``mlflow server`` process."""
    settings = tiny_settings()
    first = run_train(settings)
    client = MlflowClient(mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("ravdess-ser").experiment_id])
    names = {run.info.run_name for run in runs}
    assert {"train", "rf/actor-kfold/all", "cnn/actor-kfold/all", "logreg/actor-kfold/all/fold-4"} <= names
    model_run = next(r for r in runs if r.info.run_name == "rf/actor-kfold/all")
    assert 0 <= model_run.data.metrics["uar_mean"] <= 1
    assert {"speech_accuracy_mean", "song_uar_mean"} <= set(model_run.data.metrics)  # subset all, apart
    artifacts = {a.path for a in client.list_artifacts(model_run.info.run_id)}
    assert {"confusion_matrix.png", "confusion_matrix.json", "classification_report.md"} <= artifacts
    assert first["registry"]["promoted"] is True
    assert first["best"]["uar"] > 0.3  # well above chance (0.125) on the demo corpus
    champion = client.get_model_version_by_alias("ravdess-emotion", CHAMPION)
    assert champion.tags["protocol"] == "actor-kfold"
    assert champion.tags["data_version"].startswith("clips:")
    assert (workspace / "plots" / "confusion.csv").read_text().startswith("actual,predicted")

    # The same data and settings cannot beat themselves: a new version, but champion stays.
    second = run_train(settings)
    assert second["registry"]["promoted"] is False
    assert client.get_model_version_by_alias("ravdess-emotion", CHAMPION).version == champion.version
    assert len(client.search_model_versions("name='ravdess-emotion'")) == 2

    # The registered pyfunc predicts a WAV path in a fresh process with only the MLflow store.
    wav = sorted((workspace / "data" / "raw" / "speech" / "Actor_01").glob("*.wav"))[0]
    code = (
        "import json, sys, mlflow, pandas as pd;"
        # reading files is the caller's choice (model_config), off in a served model by default
        "m = mlflow.pyfunc.load_model('models:/ravdess-emotion@champion',"
        " model_config={'allow_paths': True});"
        f"print(json.dumps(m.predict(pd.DataFrame({{'path': [{str(wav)!r}]}})).iloc[0].to_dict()))"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd="/", env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    prediction = json.loads(done.stdout.strip().splitlines()[-1])
    assert prediction["label"] in {
        "neutral",
        "calm",
        "happy",
        "sad",
        "angry",
        "fearful",
        "disgust",
        "surprised",
    }
    assert abs(sum(v for k, v in prediction.items() if k.startswith("prob_")) - 1) < 1e-4


def test_rollback_restores_previous(mlflow_store):
    client = MlflowClient(mlflow_store)
    client.create_registered_model("m")
    for _ in range(2):
        run = client.create_run("0")
        client.log_text(run.info.run_id, "x", "x.txt")
        client.create_model_version("m", run.info.artifact_uri, run_id=run.info.run_id)
    client.set_registered_model_alias("m", CHAMPION, "2")
    client.set_registered_model_alias("m", PREVIOUS, "1")
    rollback(client, "m")
    assert str(client.get_model_version_by_alias("m", CHAMPION).version) == "1"
    assert str(client.get_model_version_by_alias("m", PREVIOUS).version) == "2"


def test_rollback_without_previous_is_a_clear_error(mlflow_store):
    from components.errors import SerError

    client = MlflowClient(mlflow_store)
    client.create_registered_model("m")
    with pytest.raises(SerError, match="nothing to roll back"):
        rollback(client, "m")
