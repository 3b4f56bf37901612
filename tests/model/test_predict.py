"""``ser predict`` and ``ser registry`` against a real MLflow store holding a small registered model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from mlflow import MlflowClient
from typer.testing import CliRunner

from cli import app
from components.data.ravdess import EMOTION_NAMES, parse_name
from components.errors import SerError
from components.registry.promote import CHAMPION, PREVIOUS
from components.serving.predict import find_audio
from components.serving.windows import Window, mean_probabilities, plan_windows, top_k
from tests.conftest import ROOT, tone

MODEL_NAME = "ravdess-emotion"


def fit_tiny_predictor(features_dir: Path):
    """A logistic regression on the demo corpus's hand-made features, with its extraction settings."""
    from components.evaluation.dataset import load_dataset
    from components.features.sets import extract_params
    from components.models import build_model
    from components.serving.pyfunc import EmotionPredictor
    from components.settings import load_params

    params = load_params(ROOT / "params.yaml")
    data = load_dataset(features_dir, ["handmade"], False)
    X, y = data.inputs(None, ["handmade"], False), data.labels["emotion"].to_numpy()
    model = build_model("logreg").fit(X, y)
    extract = extract_params(params["preprocess"], params["featurize"])
    return EmotionPredictor(model, ("handmade",), False, extract, {"model": "logreg", "kind": "logreg"})


@pytest.fixture(scope="session")
def registered_store(tmp_path_factory, mlflow_template, demo_features) -> Path:
    """A store with one version of ``ravdess-emotion`` (alias champion); tests copy it before changing it."""
    import mlflow

    from components.registry.model_io import register_predictor

    root = tmp_path_factory.mktemp("registered")
    shutil.copy(mlflow_template, root / "mlflow.db")
    tags = {"model_name": "logreg", "model_kind": "logreg", "protocol": "actor-kfold", "subset": "all"}
    tags |= {"primary_metric": "uar", "primary_metric_value": "0.5", "data_version": "demo-4-actors"}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # the experiment's artifacts go under ./mlruns
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        try:
            predictor = fit_tiny_predictor(demo_features / "data" / "features")
            register_predictor(predictor, MODEL_NAME, tags, CHAMPION)
        finally:
            mlflow.set_tracking_uri(None)  # forget the global URI (it also sets the variable)
    return root


@pytest.fixture
def store(registered_store, tmp_path, monkeypatch) -> Iterator[str]:
    """A private copy of the registered store (same artifacts); its URI is in MLFLOW_TRACKING_URI."""
    import mlflow

    shutil.copy(registered_store / "mlflow.db", tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    yield uri
    mlflow.set_tracking_uri(None)  # `ser` commands set it in this process


@pytest.fixture
def clips(demo_features, tmp_path) -> Path:
    """Twelve RAVDESS-named demo clips (48 kHz) in nested folders, and one file that is not audio."""
    raw = demo_features / "data" / "raw" / "speech" / "Actor_02"
    out = tmp_path / "clips"
    for i, wav in enumerate(sorted(raw.glob("*.wav"))[::5][:12]):
        target = out / f"part{i % 2}" / "deeper" / wav.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(wav, target)
    (out / "part0" / "notes.txt").write_text("not audio")
    return out


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_plan_windows_covers_the_recording_and_keeps_short_ones_whole():
    assert plan_windows(16_000 * 5, 16_000, 4.0, 2.0, long_dur=6.0) == [Window(0, 80_000, 16_000)]
    windows = plan_windows(16_000 * 10, 16_000, 4.0, 2.0)
    assert [(w.start_dur, w.stop_dur) for w in windows] == [(0, 4), (2, 6), (4, 8), (6, 10)]
    tail = plan_windows(int(16_000 * 9.5), 16_000, 4.0, 2.0)
    assert tail[-1].stop_dur == 9.5 and tail[-1].stop - tail[-1].start == 64_000
    with pytest.raises(SerError, match="skip audio"):
        plan_windows(100, 16_000, 1.0, 2.0)
    assert np.allclose(mean_probabilities(np.array([[0.2, 0.8], [0.6, 0.4]])), [0.4, 0.6])
    assert top_k([0.1, 0.6, 0.3], ["a", "b", "c"], 2) == [("b", 0.6), ("c", 0.3)]


def test_find_audio_expands_folders_globs_and_reports_missing(clips):
    wav = next(clips.rglob("*.wav"))
    files, missing = find_audio([str(clips), str(wav), str(clips / "**" / "*.wav"), "nope.wav", "x*.zzz"])
    assert len(files) == 12 and all(f.suffix == ".wav" for f in files)  # each file once, no .txt
    assert [m.error for m in missing] == [
        "nope.wav: no such file or folder",
        "x*.zzz: no file matches this pattern",
    ]


def test_predict_files_folders_globs_with_ravdess_summary_json_and_csv(store, clips, tmp_path):
    import mlflow

    first = sorted(clips.rglob("*.wav"))[0]
    result = invoke(
        "predict",
        str(clips / "part0"),
        str(clips / "part1" / "**" / "*.wav"),
        str(first),
        "--json",
        str(tmp_path / "out.json"),
        "--batch-size",
        "5",
    )
    assert result.exit_code == 0, result.output
    assert "| file" in result.stdout and "top-3" in result.stdout and "true" in result.stdout
    assert "RAVDESS-named files: 12  accuracy" in result.stdout and "true \\ predicted" in result.stdout
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["model"]["version"] == "1" and report["model"]["aliases"] == [CHAMPION]
    assert len(report["files"]) == 12 and report["summary"]["n"] == 12
    one = next(f for f in report["files"] if f["file"] == str(first))
    assert one["label"] == max(one["probabilities"], key=one["probabilities"].get)
    assert abs(sum(one["probabilities"].values()) - 1) < 1e-6 and len(one["top3"]) == 3
    assert one["true_label"] == parse_name(first).emotion_name

    # The same answer as the registered pyfunc gives for the file's path.
    pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@{CHAMPION}", model_config={"allow_paths": True})
    expected = pyfunc.predict(pd.DataFrame({"path": [str(first)]})).iloc[0]
    assert one["label"] == expected["label"] and one["confidence"] == pytest.approx(expected["confidence"])

    result = invoke("predict", str(clips), "--csv", str(tmp_path / "out.csv"), "--no-progress")
    table = pd.read_csv(tmp_path / "out.csv")
    assert result.exit_code == 0 and len(table) == 12
    assert {"file", "label", "confidence", "prob_angry", "true_label", "n_windows", "error"} <= set(table)


def test_long_recording_is_scored_in_windows(store, demo_features, tmp_path):
    speech = sorted((demo_features / "data" / "raw" / "speech" / "Actor_01").glob("*.wav"))
    parts = [sf.read(speech[i])[0] for i in (0, 30, 50)]
    signal = np.concatenate(parts)[: 10 * 48_000]
    signal = np.stack([signal, 0.5 * signal], axis=1)  # stereo
    long = tmp_path / "long.flac"
    sf.write(long, np.pad(signal, ((0, 10 * 48_000 - len(signal)), (0, 0))), 44_100)  # relabelled: 10.9 s
    result = invoke("predict", str(long), "--windows", "--json", str(tmp_path / "w.json"))
    assert result.exit_code == 0, result.output
    assert "0.0-4.0 s" in result.stdout and "2.0-6.0 s" in result.stdout
    found = json.loads((tmp_path / "w.json").read_text())["files"][0]
    assert found["duration"] == pytest.approx(10 * 48_000 / 44_100, abs=1e-3)
    assert len(found["windows"]) == 5 and found["windows"][-1]["end"] == pytest.approx(found["duration"])
    mean = mean_probabilities(np.array([list(w["probabilities"].values()) for w in found["windows"]]))
    names = list(found["windows"][0]["probabilities"])
    assert found["label"] == names[int(mean.argmax())]
    assert found["confidence"] == pytest.approx(mean.max())


def test_bad_files_get_an_error_line_and_fail_only_when_nothing_is_predicted(store, tmp_path, write_wav):
    good = write_wav(tmp_path / "tone.wav", tone(dur=2.0, sampling_rate=22_050), 22_050)
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF" + b"\x00" * 40)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    result = invoke("predict", str(good), str(bad), str(empty))
    assert result.exit_code == 0, result.output
    assert f"error: {bad}: not a readable WAV/FLAC file" in result.stderr
    assert "1 of 3 inputs predicted" in result.stderr
    assert "RAVDESS-named" not in result.stdout  # no true labels among these names

    result = invoke("predict", str(bad), str(empty))
    assert result.exit_code == 1
    assert isinstance(result.exception, SerError) and "none of the 2 inputs" in str(result.exception)


def test_silent_files_get_an_error_row_and_the_others_a_label(store, tmp_path, write_wav):
    """A silent clip has no emotion to find; a model would still name one ("sad 1.00")."""
    good = write_wav(tmp_path / "tone.wav", tone(dur=2.0))
    zeros = write_wav(tmp_path / "zeros.wav", np.zeros(48_000, np.float32), 48_000)
    quiet = (1e-5 * np.random.default_rng(0).standard_normal(32_000)).astype(np.float32)  # -100 dBFS
    hiss = write_wav(tmp_path / "hiss.wav", quiet, 16_000, "FLOAT")
    result = invoke("predict", str(good), str(zeros), str(hiss), "--json", str(tmp_path / "out.json"))
    assert result.exit_code == 0, result.output
    assert f"error: {zeros}: silent: every sample is zero\n" in result.stderr
    assert f"error: {hiss}: silent: 100.0% of frames below -60 dBFS (max 98%)\n" in result.stderr
    assert "1 of 3 inputs predicted" in result.stderr
    files = {Path(f["file"]).name: f for f in json.loads((tmp_path / "out.json").read_text())["files"]}
    assert files["tone.wav"]["label"] in EMOTION_NAMES and files["tone.wav"]["error"] is None
    assert files["zeros.wav"]["label"] is None and "silent" in files["zeros.wav"]["error"]
    assert files["hiss.wav"]["label"] is None and files["hiss.wav"]["probabilities"] == {}


def test_predict_in_a_fresh_process_needs_only_the_store(store, tmp_path, write_wav):
    """No params.yaml, no pipeline outputs: ``MLFLOW_TRACKING_URI`` and the files are enough."""
    wav = write_wav(tmp_path / "clip.wav", tone(dur=1.5, sampling_rate=8_000), 8_000)
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    done = subprocess.run(
        [sys.executable, "-m", "cli", "predict", str(wav), "--json", "out.json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"model: {MODEL_NAME} v1 (champion), logreg, clip 4 s" in done.stderr
    assert json.loads((tmp_path / "out.json").read_text())["files"][0]["label"] in EMOTION_NAMES


def test_predict_without_a_store_is_a_clear_error(tmp_path, monkeypatch, write_wav):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # restored after the test
    mlflow.set_tracking_uri(None)
    wav = write_wav(tmp_path / "a.wav")
    monkeypatch.chdir(tmp_path)  # no params.yaml here, and none named: no store either
    result = invoke("predict", str(wav))
    assert result.exit_code == 1 and "MLFLOW_TRACKING_URI" in str(result.exception)
    result = invoke("predict", str(wav), "--params", str(tmp_path / "params.yaml"))  # named: it must exist
    assert result.exit_code == 1 and str(result.exception).startswith(
        f"{tmp_path / 'params.yaml'}: no params file"
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none.db'}")
    result = invoke("predict", str(wav))
    assert result.exit_code == 1 and "no MLflow store there" in str(result.exception)
    assert not (tmp_path / "none.db").exists()  # not created as a side effect


def test_registry_show_and_rollback_through_the_cli(store):
    client = MlflowClient(store)
    first = client.get_model_version(MODEL_NAME, "1")
    client.create_model_version(MODEL_NAME, first.source, run_id=first.run_id, tags={"model_name": "rf"})
    client.set_registered_model_alias(MODEL_NAME, CHAMPION, "2")
    client.set_registered_model_alias(MODEL_NAME, PREVIOUS, "1")

    shown = invoke("registry", "show", "--tags")
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0] == f"{MODEL_NAME}: 2 version(s)"
    assert any(line.startswith("|       2 | champion") and " rf " in line for line in lines)
    assert any(line.startswith("|       1 | previous") and "uar 0.500" in line for line in lines)
    assert "v1: data_version=demo-4-actors" in shown.stdout

    rolled = invoke("registry", "rollback")
    assert rolled.exit_code == 0, rolled.output
    assert rolled.stdout.strip() == f"{MODEL_NAME}: champion is v1; v2 is now 'previous'"
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == "1"
    assert str(client.get_model_version_by_alias(MODEL_NAME, PREVIOUS).version) == "2"

    missing = invoke("registry", "show", "--name", "no-such-model")
    assert missing.exit_code == 1 and "no registered model" in str(missing.exception)


def test_the_clip_checks_are_the_ones_recorded_with_the_model():
    """ser predict, predict-batch, evaluate and the web demo read them from the model, not params.yaml."""
    from types import SimpleNamespace

    from components.data.clip_checks import ClipLimits
    from components.registry.model_io import LoadedModel

    recorded = {**ClipLimits().as_dict(), "min_sampling_rate": 16_000.0, "max_clipped_share": 0.05}
    ours = LoadedModel("models:/x/1", None, SimpleNamespace(info={"clip_checks": recorded}))
    silence_only = {"silence_dbfs": -50.0, "max_silent_share": 0.9}  # what models recorded before
    older = LoadedModel("models:/x/2", None, SimpleNamespace(info={"silence": silence_only}))
    oldest = LoadedModel("models:/x/3", None, SimpleNamespace(info={}))  # registered before any was
    assert ours.clip_checks.as_dict() == recorded
    assert older.clip_checks == ClipLimits(silence_dbfs=-50.0, max_silent_share=0.9)
    assert oldest.clip_checks == ClipLimits()
