"""The wav2vec2 stage end to end on a tiny random checkpoint: offline skips, embeddings, fine-tuning.

A real Prefect engine and MLflow store, offline, one CPU thread, 32 demo clips (4 actors, one
speech clip per emotion each).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from mlflow import MlflowClient

from components.data.ravdess import EMOTION_NAMES
from components.errors import SerError
from components.settings import Wav2Vec2, load_params
from components.wav2vec2.pretrained import save_tiny_checkpoint
from tests.conftest import ROOT

MISSING = "ser-tests/no-such-wav2vec2"  # an id no cache holds


pytestmark = pytest.mark.usefixtures("hf_offline")  # no test may reach the hub


@pytest.fixture(scope="module")
def waveforms(demo_features, tmp_path_factory) -> Path:
    """The demo corpus's first speech take of each emotion per actor, as a waveform table."""
    from components.features.featurize import featurize
    from components.features.sets import extract_params

    clips = pd.read_parquet(demo_features / "data" / "metadata" / "clips.parquet")
    first = (clips["vocal_channel"] == 1) & (clips["intensity"] == 1)
    chosen = clips[first & (clips["statement"] == 1) & (clips["repetition"] == 1)]
    root = tmp_path_factory.mktemp("w2v-data")
    (root / "metadata").mkdir()
    chosen.to_parquet(root / "metadata" / "clips.parquet")
    params = load_params(ROOT / "params.yaml")
    extract = extract_params(params["preprocess"], params["featurize"])
    featurize(chosen, root / "features", ["waveform"], extract, n_jobs=1, progress=False)
    return root


@pytest.fixture
def workspace(waveforms, mlflow_store, prefect_harness, tmp_path) -> Path:
    """A project root (the working folder, with an MLflow store) whose clips table is the 32 clips."""
    (tmp_path / "data" / "metadata").mkdir(parents=True)
    shutil.copy(waveforms / "metadata" / "clips.parquet", tmp_path / "data" / "metadata")
    return tmp_path


def stage_settings(pretrained: str, **wav2vec2) -> dict:
    settings = load_params(ROOT / "params.yaml")
    settings["wav2vec2"].update({"pretrained": pretrained, "device": "cpu", **wav2vec2})
    settings["evaluate"].update(
        runs=[{"protocol": "actor-kfold", "subset": "all"}], n_folds=4, n_val_actors=1
    )
    settings["train"]["profile"] = "full"  # as configured here (the quick profile has its own test)
    return settings


def run_stage(settings: dict, waveforms: Path) -> dict:
    from flows import run_flow
    from flows.wav2vec2 import wav2vec2_stage

    return run_flow(wav2vec2_stage, settings=settings, features_dir=waveforms / "features")


def runs_by_name(store: str) -> dict:
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("ravdess-ser").experiment_id
    return {run.info.run_name: run for run in client.search_runs([experiment], order_by=["start_time ASC"])}


def test_missing_weights_offline_are_a_visible_skip_unless_required(workspace, waveforms, mlflow_store):
    metrics = run_stage(stage_settings(MISSING), waveforms)
    assert metrics["status"].startswith(
        f"skipped: pretrained weights for {MISSING} are not available offline"
    )
    assert f"hf download {MISSING}" in metrics["status"]
    assert json.loads((workspace / "metrics" / "wav2vec2.json").read_text())["status"] == metrics["status"]
    assert (workspace / "data" / "embeddings").is_dir()  # the DVC output exists even when skipped
    run = runs_by_name(mlflow_store)["wav2vec2"]
    assert run.data.tags["status"] == "skipped" and "not available offline" in run.data.tags["status_message"]
    assert run.data.params["status"] == metrics["status"]

    with pytest.raises(SerError, match="not available offline"):
        run_stage(stage_settings(MISSING, required=True), waveforms)

    if not torch.cuda.is_available():
        skipped = run_stage(stage_settings(MISSING, local_only=True, mode="finetune"), waveforms)
        assert "not available offline" in skipped["status"]  # weights first: they are checked before the GPU
        tiny_dir = str(save_tiny_checkpoint(workspace / "tiny"))
        no_gpu = run_stage(stage_settings(tiny_dir, mode="finetune", device="auto"), waveforms)
        assert no_gpu["status"].startswith("skipped: no GPU") and "device: cpu" in no_gpu["status"]


def test_the_stage_command_skips_with_exit_0_and_fails_in_one_line_when_required(
    tmp_path, mlflow_store, prefect_harness
):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["wav2vec2"]["pretrained"] = MISSING
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1"}
    commands = {}
    for required in (False, True):  # at once, each in a project folder of its own
        folder = tmp_path / f"required-{required}"
        folder.mkdir()
        params["wav2vec2"]["required"] = required
        (folder / "params.yaml").write_text(yaml.safe_dump(params))
        commands[required] = subprocess.Popen(
            [sys.executable, "-m", "flows.wav2vec2"],
            cwd=folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    expected = f"pretrained weights for {MISSING} are not available offline"
    for required, command in commands.items():
        stdout, stderr = command.communicate(timeout=300)
        assert command.returncode == (1 if required else 0), (stdout + stderr)[-3000:]
        assert "Traceback" not in stdout + stderr
        if required:
            assert f"error: {expected}" in stderr
        else:
            assert f"wav2vec2: skipped: {expected}" in stdout
            metrics = json.loads((tmp_path / "required-False" / "metrics" / "wav2vec2.json").read_text())
            assert metrics["status"].startswith(f"skipped: {expected}")
    assert not (tmp_path / "required-True" / "metrics").exists()  # a failure writes no metrics


def test_embed_mode_caches_embeddings_scores_registers_and_serves(
    workspace, waveforms, tiny_wav2vec2, mlflow_store, monkeypatch
):
    import flows.wav2vec2 as stage

    settings = stage_settings(tiny_wav2vec2, mode="embed")
    real, calls = stage.extract_embeddings, []

    def interrupted_after_one_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise SerError("interrupted")
        return real(*args, **kwargs)

    monkeypatch.setattr(stage, "EMBED_CHUNK", 16)
    monkeypatch.setattr(stage, "SAVE_EVERY_S", 0.0)  # save after every chunk
    monkeypatch.setattr(stage, "extract_embeddings", interrupted_after_one_chunk)
    with pytest.raises(SerError, match="interrupted"):
        run_stage(settings, waveforms)
    assert len(pd.read_parquet(workspace / "data" / "embeddings" / "wav2vec2.parquet")) == 16
    monkeypatch.setattr(stage, "extract_embeddings", real)

    first = run_stage(settings, waveforms)
    assert first["status"] == "ok" and first["modes"] == {"embed": "ok"}
    assert first["embeddings"]["n_extracted"] == 16 and first["embeddings"]["n_reused"] == 16
    assert first["samples_per_s"]["embed"] > 0
    row = first["results"][0]
    assert (row["model"], row["protocol"], row["n_folds"]) == ("wav2vec2-embed", "actor-kfold", 4)
    assert 0 <= row["uar"] <= 1 and first["best"]["model"] == "wav2vec2-embed"
    assert first["registry"]["promoted"] is True  # the store had no champion
    table = pd.read_parquet(workspace / "data" / "embeddings" / "wav2vec2.parquet")
    assert len(table) == 32 and {"clip_id", "content_hash", "embedding"} <= set(table.columns)

    second = run_stage(settings, waveforms)
    assert second["embeddings"]["n_reused"] == 32 and second["embeddings"]["n_extracted"] == 0
    assert second["results"][0]["uar"] == row["uar"]  # same embeddings, same folds, same head
    assert second["registry"]["promoted"] is False  # it cannot beat itself

    runs = runs_by_name(mlflow_store)
    assert {"wav2vec2", "wav2vec2-embed/actor-kfold/all", "wav2vec2-embed/actor-kfold/all/fold-4"} <= set(
        runs
    )
    assert runs["wav2vec2"].data.tags["status"] == "ok"
    client = MlflowClient(mlflow_store)
    version = client.get_model_version("ravdess-emotion", first["registry"]["version"])
    assert version.tags["model_kind"] == "wav2vec2-embed" and version.tags["primary_metric"] == "uar"
    assert {"data_version", "protocol", "subset", "primary_metric_value", "git_commit"} <= set(version.tags)

    wav = pd.read_parquet(waveforms / "metadata" / "clips.parquet")["location"].iloc[0]
    code = (
        "import json, mlflow, pandas as pd;"
        f"m = mlflow.pyfunc.load_model('models:/ravdess-emotion/{version.version}',"
        " model_config={'allow_paths': True});"
        f"print(json.dumps(m.predict(pd.DataFrame({{'path': [{wav!r}]}})).iloc[0].to_dict()))"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd="/", env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    prediction = json.loads(done.stdout.strip().splitlines()[-1])
    assert prediction["label"] in EMOTION_NAMES
    assert abs(sum(prediction[f"prob_{name}"] for name in EMOTION_NAMES) - 1) < 1e-4


def test_finetune_mode_trains_logs_epochs_and_resumes(workspace, waveforms, tiny_wav2vec2, mlflow_store):
    overrides = {"max_dur": 0.5, "lr": 1e-3, "eval_batch_size": 8, "patience": 5}
    settings = stage_settings(tiny_wav2vec2, mode="finetune", epochs=2, batch_size=4, overrides=overrides)
    settings["evaluate"].update(runs=[{"protocol": "holdout", "subset": "all"}], test_actors=[4])
    first = run_stage(settings, waveforms)
    assert first["status"] == "ok" and first["best"]["model"] == "wav2vec2-finetune"
    folds = {fold["fold"]: fold for fold in first["finetune"]["folds"]}
    assert set(folds) == {"holdout-all-holdout", "refit-all"}  # the split, then the model registered
    assert all(f["epochs_run"] == 2 and f["resumed_from"] == 0 for f in folds.values())
    for name in folds:
        saved = {path.name for path in (workspace / "data" / "checkpoints" / "wav2vec2" / name).iterdir()}
        assert {"last.pt", "best.pt", "key.txt"} <= saved
    client = MlflowClient(mlflow_store)
    fold_run = runs_by_name(mlflow_store)["wav2vec2-finetune/holdout/all/holdout"]
    assert [m.step for m in client.get_metric_history(fold_run.info.run_id, "val_uar")] == [1, 2]
    assert 0 <= fold_run.data.metrics["uar"] <= 1
    assert client.get_model_version("ravdess-emotion", first["registry"]["version"]).tags["model_kind"] == (
        "wav2vec2-finetune"
    )

    second = run_stage(settings, waveforms)  # finished checkpoints: nothing to train
    assert all(f["resumed_from"] == f["epochs_run"] == 2 for f in second["finetune"]["folds"])
    assert second["results"][0]["uar"] == first["results"][0]["uar"]
    fold_run = [r for name, r in runs_by_name(mlflow_store).items() if name.endswith("holdout/all/holdout")]
    history = client.get_metric_history(fold_run[-1].info.run_id, "val_uar")
    assert sorted(m.step for m in history) == [1, 2]  # the resumed epochs are logged too


def test_a_whisper_checkpoint_runs_both_modes_and_its_model_serves(
    workspace, waveforms, mlflow_store, tmp_path
):
    """A tiny random transformers Whisper as wav2vec2.pretrained: every layer embedded, fine-tuned, served."""
    from components.wav2vec2.hf_whisper import save_tiny_whisper

    folder = str(save_tiny_whisper(tmp_path / "whisper", max_source_positions=100))  # 2 s: longer are cut
    overrides = {"max_dur": 1.0, "lr": 1e-3, "eval_batch_size": 8}
    settings = stage_settings(folder, mode="both", epochs=1, batch_size=8, overrides=overrides)
    settings["evaluate"].update(runs=[{"protocol": "holdout", "subset": "all"}], test_actors=[4])
    out = run_stage(settings, waveforms)
    assert out["status"] == "ok" and out["modes"] == {"embed": "ok", "finetune": "ok"}
    assert {row["model"] for row in out["results"]} == {"wav2vec2-embed", "wav2vec2-finetune"}
    table = pd.read_parquet(workspace / "data" / "embeddings" / "wav2vec2.parquet")
    assert table.attrs["ser.embedding"]["shape"] == [3, 32]  # the input and both layers
    version = out["registry"]["version"]
    wav = pd.read_parquet(waveforms / "metadata" / "clips.parquet")["location"].iloc[0]
    code = (
        "import json, mlflow, pandas as pd;"
        f"m = mlflow.pyfunc.load_model('models:/ravdess-emotion/{version}',"
        " model_config={'allow_paths': True});"
        f"print(json.dumps(m.predict(pd.DataFrame({{'path': [{wav!r}]}})).iloc[0].to_dict()))"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd="/", env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["label"] in EMOTION_NAMES


def test_prefect_yaml_deploys_the_finetune_flow_on_the_gpu_pool():
    from prefect import Flow

    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    try:
        from prefect.cli.deploy._models import PrefectYamlModel  # what `prefect deploy` validates with
    except ImportError:  # a private module: it may move
        PrefectYamlModel = None
    if PrefectYamlModel is not None:
        PrefectYamlModel.model_validate(config)
    for step in config["pull"]:
        (function,) = step
        module, name = function.rsplit(".", 1)
        assert callable(getattr(importlib.import_module(module), name))
    deployments = {d["name"]: d for d in config["deployments"]}
    finetune = deployments["wav2vec2-finetune"]
    assert finetune["work_pool"]["name"] == "gpu"
    assert finetune["parameters"] == {"mode": "finetune", "device": "cuda"}
    path, name = finetune["entrypoint"].split(":")
    entry = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)
    assert isinstance(entry, Flow) and entry.name == "wav2vec2"
    assert finetune["parameters"].items() <= entry.validate_parameters(finetune["parameters"]).items()


def test_the_quick_profile_trims_this_stage_as_it_trims_train(
    workspace, waveforms, tiny_wav2vec2, mlflow_store
):
    from flows.wav2vec2 import stage_settings as flow_settings

    settings = stage_settings(tiny_wav2vec2, mode="embed")
    settings["evaluate"]["runs"].append({"protocol": "random", "subset": "all"})
    settings["train"].update(profile="quick", quick={**settings["train"]["quick"], "runs": 1, "n_folds": 3})
    metrics = run_stage(settings, waveforms)
    assert [(r["protocol"], r["n_folds"]) for r in metrics["results"]] == [("actor-kfold", 3)]
    section = Wav2Vec2(pretrained=tiny_wav2vec2, epochs=12)
    assert flow_settings(section, max_epochs=8)["finetune"].epochs == 8
    assert flow_settings(section)["finetune"].epochs == 12
