"""REST serving: input limits and error types of the pyfunc, then the real ``mlflow models serve`` process."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from mlflow.exceptions import MlflowException

from components.data.clip_checks import ClipLimits
from components.data.ravdess import EMOTION_NAMES
from components.errors import SerError
from components.serving.pyfunc import MODEL_CONFIG, EmotionPyfunc, decode_row
from tests.conftest import ROOT, free_port, tone, wait_until_up
from tests.model.test_predict import MODEL_NAME, fit_tiny_predictor, registered_store  # noqa: F401

SERVE_CONFIG = {"max_audio_dur": 12.0}  # overrides the logged 30 s, to check that overrides reach the model


def wav_base64(signal: np.ndarray, sampling_rate: int, subtype: str = "PCM_16") -> str:
    buffer = io.BytesIO()
    sf.write(buffer, signal, sampling_rate, format="WAV", subtype=subtype)
    return base64.b64encode(buffer.getvalue()).decode()


def test_decode_row_enforces_size_and_duration_limits():
    clip = wav_base64(tone(dur=3.0), 16_000)
    signal, rate = decode_row({"audio_base64": clip}, max_bytes=200_000, max_dur=5.0)
    assert rate == 16_000 and signal.shape == (48_000, 1)
    with pytest.raises(SerError, match=r"audio_base64: 0\.1 MB of audio is over the limit of 0\.05 MB"):
        decode_row({"audio_base64": clip}, max_bytes=50_000)
    with pytest.raises(SerError, match=r"3\.0 s of audio is over the limit of 2 s per clip"):
        decode_row({"audio_base64": clip}, max_dur=2.0)
    with pytest.raises(SerError, match=r"waveform: 2\.0 s of audio"):
        decode_row({"waveform": np.zeros(32_000), "sampling_rate": 16_000}, max_dur=1.0)
    with pytest.raises(SerError, match="one base64 string per row, got ndarray"):
        decode_row({"audio_base64": np.array([clip, clip])})


def test_decode_row_refuses_silent_clips_with_validates_settings():
    from components.settings import load_params

    validate = load_params(ROOT / "params.yaml")["validate"]  # a served model has no params.yaml
    checks = ClipLimits.from_mapping(MODEL_CONFIG)
    assert checks.without_max_dur() == ClipLimits.from_mapping(validate).without_max_dur()
    zeros = wav_base64(np.zeros(16_000, np.float32), 16_000)
    with pytest.raises(SerError) as caught:
        decode_row({"audio_base64": zeros}, checks=checks)
    assert str(caught.value) == "audio_base64: silent: every sample is zero"
    hiss = (1e-5 * np.random.default_rng(0).standard_normal(16_000)).tolist()  # -100 dBFS
    with pytest.raises(SerError, match=r"^waveform: silent: 100\.0% of frames below -60 dBFS \(max 98%\)$"):
        decode_row({"waveform": hiss, "sampling_rate": 16_000}, checks=checks)
    assert decode_row({"audio_base64": zeros})[0].shape == (16_000, 1)  # no settings: no test
    assert decode_row({"audio_base64": wav_base64(tone(), 16_000)}, checks=checks)[1] == 16_000


def test_pyfunc_raises_invalid_parameter_value_and_refuses_paths_when_served(demo_features):
    model = EmotionPyfunc()
    model.predictor = fit_tiny_predictor(demo_features / "data" / "features")
    # model_config {"allow_paths": true}: what components.registry.model_io.load_model passes in-process
    model.allow_paths, model.max_audio_dur, model.max_audio_bytes = True, 30.0, 10_000_000
    wav = next((demo_features / "data" / "raw" / "speech").rglob("*.wav"))
    in_process = model.predict(None, pd.DataFrame({"path": [str(wav)]}))
    assert in_process["label"].iloc[0] in model.predictor.class_names

    garbage = base64.b64encode(b"these bytes are no audio" * 10).decode()
    with pytest.raises(MlflowException) as caught:
        model.predict(None, pd.DataFrame({"audio_base64": [wav_base64(tone(), 16_000), garbage]}))
    assert caught.value.get_http_status_code() == 400
    assert "input row 1: audio_base64: not a readable WAV/FLAC file" in caught.value.message
    silent = wav_base64(np.zeros(16_000, np.float32), 16_000)
    with pytest.raises(MlflowException) as caught:
        model.predict(None, pd.DataFrame({"audio_base64": [wav_base64(tone(), 16_000), silent]}))
    assert caught.value.get_http_status_code() == 400
    assert caught.value.message == "input row 1: audio_base64: silent: every sample is zero"
    model.checks = ClipLimits(silence_dbfs=None)  # model_config {"silence_dbfs": null} lifts the test
    assert len(model.predict(None, pd.DataFrame({"audio_base64": [silent]}))) == 1
    with pytest.raises(MlflowException, match="no input rows"):
        model.predict(None, pd.DataFrame({"audio_base64": []}))

    for logged in (False, None):  # the logged default, as a scoring server keeps it; null (older models)
        model.allow_paths = logged
        with pytest.raises(MlflowException, match="path inputs are disabled on this server"):
            model.predict(None, pd.DataFrame({"path": [str(wav)]}))
    model.allow_paths = True
    assert model.predict(None, pd.DataFrame({"path": [str(wav)]})).equals(in_process)


def test_path_access_is_decided_by_model_config_alone(registered_store, demo_features, monkeypatch):  # noqa: F811
    """Logged ``allow_paths: false`` keeps a server's files closed; ``ser``'s in-process loader opts in.

    No MLflow-internal variable takes part: setting the one MLflow's scoring server sets changes nothing.
    """
    import mlflow

    from components.registry.model_io import load_model

    uri = f"models:/{MODEL_NAME}@champion"
    wav = next((demo_features / "data" / "raw" / "speech").rglob("*.wav"))
    rows = pd.DataFrame({"path": [str(wav)]})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{registered_store / 'mlflow.db'}")
    assert mlflow.models.Model.load(uri).flavors["python_function"]["config"]["allow_paths"] is False
    with pytest.raises(MlflowException, match="path inputs are disabled on this server"):
        mlflow.pyfunc.load_model(uri).predict(rows)  # what `mlflow models serve` loads, flag or not
    monkeypatch.setenv("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "true")
    assert load_model(uri).pyfunc.predict(rows)["label"].iloc[0] in EMOTION_NAMES
    for module in (ROOT / "components").rglob("*.py"):
        assert "_MLFLOW_" not in module.read_text(), f"{module}: reads a private MLflow variable"


@pytest.fixture(scope="module")
def server(registered_store, tmp_path_factory) -> Iterator[str]:  # noqa: F811
    """``mlflow models serve`` of the champion, as ``make serve`` runs it, on a free 127.0.0.1 port."""

    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{registered_store / 'mlflow.db'}",
        "SERVING_MODEL_CONFIG": json.dumps(SERVE_CONFIG),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",  # the server runs `uvicorn`
    }
    command = [str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{MODEL_NAME}@champion"]
    command += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=registered_store
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_up(f"{url}/ping", process, log_path, timeout=180)
            yield url
        finally:
            stop_tree(process.pid)


def stop_tree(pid: int) -> None:
    """Terminate a process we started and every process it started (the server runs uvicorn as a child)."""
    import psutil

    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    tree = [*parent.children(recursive=True), parent]
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(tree, timeout=30)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{url}/invocations", json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_served_model_answers_base64_wav_and_rejects_bad_input_with_400(
    server,
    registered_store,  # noqa: F811
    demo_features,
    monkeypatch,
):
    import mlflow

    wav = sorted((demo_features / "data" / "raw" / "speech" / "Actor_03").glob("*.wav"))[7]
    clip = base64.b64encode(wav.read_bytes()).decode()
    status, body = post(server, {"dataframe_split": {"columns": ["audio_base64"], "data": [[clip], [clip]]}})
    assert status == 200, body
    answers = body["predictions"]
    assert len(answers) == 2 and answers[0] == answers[1]
    probs = {k: v for k, v in answers[0].items() if k.startswith("prob_")}
    assert len(probs) == 8 and abs(sum(probs.values()) - 1) < 1e-6
    assert answers[0]["label"] == max(probs, key=probs.get).removeprefix("prob_")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{registered_store / 'mlflow.db'}")
    pyfunc = mlflow.pyfunc.load_model(  # the same model, in-process, reading the caller's own files
        f"models:/{MODEL_NAME}@champion", model_config={"allow_paths": True}
    )
    expected = pyfunc.predict(pd.DataFrame({"path": [str(wav)]})).iloc[0]
    assert answers[0]["label"] == expected["label"]
    assert answers[0]["confidence"] == pytest.approx(expected["confidence"], abs=1e-9)

    status, body = post(server, {"inputs": [{"audio_base64": clip}]})  # list of records also works
    assert status == 200 and body["predictions"][0]["label"] == expected["label"]

    garbage = base64.b64encode(b"\x00\x01 not audio at all " * 50).decode()
    status, body = post(server, {"dataframe_split": {"columns": ["audio_base64"], "data": [[garbage]]}})
    assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "input row 0: audio_base64: not a readable WAV/FLAC file" in body["message"]

    too_long = wav_base64(tone(dur=13.0, sampling_rate=8_000), 8_000)
    status, body = post(server, {"dataframe_records": [{"audio_base64": too_long}]})
    assert status == 400 and "13.0 s of audio is over the limit of 12 s per clip" in body["message"]

    too_big = wav_base64(np.zeros((7 * 48_000, 8), dtype=np.float32), 48_000, "FLOAT")  # 10.8 MB: 7 s, 8 ch
    status, body = post(server, {"dataframe_split": {"columns": ["audio_base64"], "data": [[too_big]]}})
    assert status == 400 and "MB of audio is over the limit of 10 MB per clip" in body["message"]

    status, body = post(server, {"dataframe_split": {"columns": ["path"], "data": [[str(wav)]]}})
    assert status == 400 and "path inputs are disabled on this server" in body["message"]

    silent = wav_base64(np.zeros(48_000, np.float32), 48_000)
    status, body = post(
        server, {"dataframe_split": {"columns": ["audio_base64"], "data": [[clip], [silent]]}}
    )
    assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE"
    # MLflow's server puts its own "Failed to predict data ..." before the model's message
    assert "input row 1: audio_base64: silent: every sample is zero" in body["message"]
    one_hz = wav_base64(tone(3.0), 1)  # header-checked: never decoded as 13 hours of audio
    status, body = post(server, {"dataframe_split": {"columns": ["audio_base64"], "data": [[one_hz]]}})
    assert status == 400
    assert "input row 0: audio_base64: sampling rate 1 Hz outside [8000, 96000]" in body["message"]
