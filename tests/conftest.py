"""Shared fixtures: generated audio, the optional real RAVDESS sample, one Prefect harness."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]

# Set before any test imports Prefect, Great Expectations or MLflow.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


def benchmark_module(name: str) -> Any:
    """A benchmark script as a module (benchmarks/ is not a package; its scripts import each other)."""
    folder = str(ROOT / "benchmarks")
    sys.path.insert(0, folder)
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module


def tone(
    dur: float = 1.0, sampling_rate: int = 16_000, freq: float = 220.0, amplitude: float = 0.3, seed: int = 0
) -> np.ndarray:
    """A harmonic tone with a little noise, as float32 mono."""
    t = np.arange(int(dur * sampling_rate)) / sampling_rate
    signal = sum(amplitude / k * np.sin(2 * np.pi * freq * k * t) for k in range(1, 6))
    signal = signal + 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    return signal.astype(np.float32)


@pytest.fixture
def write_wav() -> Callable[..., Path]:
    """Write a WAV file; returns its path. ``write_wav(path, signal, sampling_rate, subtype)``."""

    def write(
        path: Path, signal: np.ndarray | None = None, sampling_rate: int = 16_000, subtype: str = "PCM_16"
    ) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(
            path,
            tone(sampling_rate=sampling_rate) if signal is None else signal,
            sampling_rate,
            subtype=subtype,
        )
        return path

    return write


@pytest.fixture(scope="session")
def ravdess_dir() -> Path:
    """The real RAVDESS sample (actors 01-12): ``RAVDESS_DIR`` or ``../shared/ravdess``; else skip."""
    path = Path(os.environ.get("RAVDESS_DIR", ROOT.parent / "shared" / "ravdess"))
    if not (path / "speech").is_dir():
        pytest.skip(f"real RAVDESS sample not found at {path} (set RAVDESS_DIR)")
    return path


@pytest.fixture(scope="session")
def emodb_dir() -> Path:
    """The real EmoDB sample (speakers 03, 08, 09, 10, 11): ``EMODB_DIR`` or ../shared/emodb; else skip."""
    path = Path(os.environ.get("EMODB_DIR", ROOT.parent / "shared" / "emodb"))
    if not (path / "wav").is_dir():
        pytest.skip(f"real EmoDB sample not found at {path} (set EMODB_DIR)")
    return path


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect API for the whole session (starting one costs seconds)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        os.environ["PREFECT_API_URL"] = PREFECT_API_URL.value()  # worker processes use it too
        try:
            yield
        finally:
            os.environ.pop("PREFECT_API_URL", None)


@pytest.fixture(autouse=True)
def forget_tracking_uri() -> Iterator[None]:
    """After each test, forget MLflow's global tracking URI and restore ``MLFLOW_TRACKING_URI``.

    A flow's ``mlflow.set_tracking_uri`` sets a module global (and the variable) that outlives
    the test: a later test's store given by the variable alone would be ignored for it. Set up
    before ``monkeypatch``, so this runs after it has undone the test's own variable. The
    ``MLFLOW_HTTP_REQUEST_*`` budget a ``ser`` command sets (components.tracking.store) goes too.
    """
    import sys

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    names += ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",)
    before = {name: os.environ.get(name) for name in names}
    yield
    if "mlflow" in sys.modules:  # a test that never imported MLflow set nothing
        sys.modules["mlflow"].set_tracking_uri(None)
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """A migrated, empty MLflow SQLite store (migrating a fresh one costs about 10 s)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    # The default experiment's artifact location is fixed, as an absolute path, when the store is
    # made: made from the checkout, every copy would write run artifacts into ./mlruns there.
    with contextlib.chdir(path.parent):
        MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_store(tmp_path, mlflow_template, monkeypatch) -> str:
    """A fresh copy of the template store; returns its tracking URI (also set in the environment)."""
    import shutil

    path = tmp_path / "mlflow" / "mlflow.db"
    path.parent.mkdir()
    shutil.copy(mlflow_template, path)
    uri = f"sqlite:///{path}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # MLflow puts the default experiment's artifacts under ./mlruns
    return uri


def wait_until_up(url: str, process, log_path: Path, timeout: float = 120.0) -> None:
    """Poll ``url`` until it answers; fail with the server's log if it exits or times out."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError as err:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up:\n{log_path.read_text()}") from err
            time.sleep(0.5)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_mlflow_server(db: Path | str, artifacts: Path, port: int, log_path: Path) -> Any:
    """A real ``mlflow server`` on 127.0.0.1:``port`` once it answers.

    ``db`` is the SQLite store's file, or a database URI (``postgresql://...``) as a string.
    """
    import subprocess
    import sys

    store = db if isinstance(db, str) else f"sqlite:///{db}"
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--backend-store-uri", store, "--workers", "1"]
    command += ["--artifacts-destination", str(artifacts)]
    server = subprocess.Popen(command, stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    wait_until_up(f"http://127.0.0.1:{port}/health", server, log_path, timeout=300)  # a new database migrates
    return server


@pytest.fixture
def mlflow_server(tmp_path, mlflow_template, monkeypatch) -> Iterator[str]:
    """A real ``mlflow server`` process on a free 127.0.0.1 port; yields its URL (also in the env)."""
    import shutil

    shutil.copy(mlflow_template, tmp_path / "server.db")
    port = free_port()
    artifacts, log = tmp_path / "server-artifacts", tmp_path / "server.log"
    server = start_mlflow_server(tmp_path / "server.db", artifacts, port, log)
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
        monkeypatch.chdir(tmp_path)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(server)


def make_clone(target: Path, mlflow_template: Path, n_actors: int = 3) -> Path:
    """The project's files (tracked, plus the working tree's code) in a fresh git repository, committed.

    Set up to run fast and offline: a ``n_actors`` demo corpus, two quick models on one protocol,
    wav2vec2 skipped for want of local weights, and a migrated MLflow store.
    """
    import shutil
    import subprocess

    import yaml

    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in files.splitlines():
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    for name in ("flows", "components"):  # the working tree's code, committed or not
        shutil.copytree(
            ROOT / name, target / name, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
        )
    params = yaml.safe_load((target / "params.yaml").read_text())
    params["ingest"]["demo_actors"] = n_actors
    params["featurize"]["feature_sets"] = ["handmade", "logmel", "waveform"]
    params["train"].update(models=["rf", "logreg"], profile="full")  # exactly these, untrimmed
    params["evaluate"].update(runs=[{"protocol": "actor-kfold", "subset": "all"}], n_folds=3, n_val_actors=1)
    params["rf"].update(n_estimators=50, features=["handmade"])  # the sets featurized above
    params["logreg"]["features"] = ["handmade"]
    params["wav2vec2"]["local_only"] = True  # no weights here: the stage records a skip and dvc goes on
    (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (target / "dvc.lock").unlink(missing_ok=True)
    (target / "mlflow").mkdir(exist_ok=True)
    shutil.copy(mlflow_template, target / "mlflow" / "mlflow.db")  # skip the store's migrations
    subprocess.run(["git", "init", "-q"], cwd=target, check=True)
    subprocess.run(["git", "add", "-A"], cwd=target, check=True)  # a DVC experiment needs a commit
    identity = ["-c", "user.name=tests", "-c", "user.email=tests@localhost"]
    subprocess.run(["git", *identity, "commit", "-qm", "clone"], cwd=target, check=True)
    return target


@pytest.fixture(scope="session")
def demo_features(tmp_path_factory) -> Path:
    """A 4-actor demo corpus, validated and featurized: ``<root>/data/{raw,metadata,features}``."""
    from components.data.discover import discover
    from components.data.metadata import build_metadata
    from components.data.synth import write_corpus
    from components.features.featurize import featurize
    from components.features.sets import extract_params
    from components.settings import load_params

    root = tmp_path_factory.mktemp("demo")
    params = load_params(ROOT / "params.yaml")
    write_corpus(root / "data" / "raw", n_actors=4, seed=0, n_jobs=2)
    clips, _ = build_metadata(discover(root / "data" / "raw"), silence_dbfs=-60.0)
    (root / "data" / "metadata").mkdir()
    clips.to_parquet(root / "data" / "metadata" / "clips.parquet")
    extract = extract_params(params["preprocess"], params["featurize"])
    featurize(clips, root / "data" / "features", ["handmade", "logmel"], extract, n_jobs=2, progress=False)
    return root


@pytest.fixture
def hf_offline(monkeypatch) -> Iterator[None]:
    """The Hugging Face hub is unreachable, and torch uses one thread (the machine is shared)."""
    import torch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_wav2vec2(tmp_path_factory) -> str:
    """A tiny randomly initialised wav2vec2 checkpoint folder: the stand-in for real weights."""
    from components.wav2vec2.pretrained import save_tiny_checkpoint

    return str(save_tiny_checkpoint(tmp_path_factory.mktemp("w2v") / "tiny", n_layers=2, hidden_size=32))


def start_prefect_server(home: Path, port: int, database_url: str | None = None) -> Any:
    """A real ``prefect server start`` on 127.0.0.1:``port`` with its own home.

    Its database is SQLite in ``home``, or ``database_url`` (``postgresql+asyncpg://...``).
    """
    import subprocess
    import sys

    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    env["PREFECT_UI_API_URL"] = f"http://127.0.0.1:{port}/api"  # else the UI calls port 4200
    command = [str(Path(sys.executable).parent / "prefect"), "server", "start"]
    log = (home / "server.log").open("w")
    server = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env
    )
    wait_until_up(f"http://127.0.0.1:{port}/api/health", server, home / "server.log", timeout=180)
    return server


def serve_deployments(project: Path, api_url: str, log_path: Path) -> Any:
    """``python -m flows.deploy`` (what ``make flows`` runs) in ``project``, once its deployments exist."""
    import subprocess
    import sys
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env |= {"PREFECT_API_URL": api_url, "SER_PROJECT_DIR": str(project), "GX_ANALYTICS_ENABLED": "false"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    log = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.deploy"], cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 180
    while set(deployment_names(api_url)) < {"retrain", "evaluate", "predict-batch"}:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"flows.deploy did not start serving:\n{log_path.read_text()}")
        time.sleep(0.5)
    return process


def deployment_names(api_url: str) -> list[str]:
    """The deployments a Prefect server knows."""
    import httpx

    return [d["name"] for d in httpx.post(f"{api_url}/deployments/filter", json={}, timeout=10).json()]


def stop(process: Any) -> None:
    """Terminate a server process, killing it if it does not stop in 30 s."""
    import subprocess

    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
