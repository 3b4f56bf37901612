"""The MLflow store failing: a server that is down or never answers, a malformed URI, a read-only store.

Each case runs the real ``ser`` command in a fresh process and checks what a person sees: the
exit status, one line on stderr naming the URI and the problem, no traceback, and how long it
took: under 15 s, or on a loaded machine the start-up measured there (imports) plus the budget.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.errors import SerError
from components.tracking.store import HTTP_ENV
from tests.conftest import ROOT, tone
from tests.model.test_predict import MODEL_NAME, fit_tiny_predictor

NETWORK_BUDGET_S = 10.0  # connection refused is instant; a silent server takes 2 tries x 2 s here
STARTUP_SLACK = 1.5  # a loaded machine's start-up varies by half from one process to the next


def ser(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> dict:
    """Run ``python -m cli ARGS``; its exit status, stdout, stderr and wall time."""
    full_env = {k: v for k, v in os.environ.items() if k not in HTTP_ENV.values()}
    full_env |= env or {}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=cwd,
        env={**full_env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    return {
        "rc": done.returncode,
        "out": done.stdout,
        "err": done.stderr,
        "wall": time.perf_counter() - start,
    }


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    import soundfile as sf

    path = tmp_path_factory.mktemp("clip") / "clip.wav"
    sf.write(path, tone(dur=1.5, sampling_rate=16_000), 16_000)
    return path


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers (the kernel completes the handshake)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


COMMANDS = {
    "predict": lambda clip: ["predict", str(clip), "--params", str(ROOT / "params.yaml")],
    "registry show": lambda clip: ["registry", "show", "--params", str(ROOT / "params.yaml")],
}


@pytest.fixture(scope="module")
def startup_s(clip, tmp_path_factory) -> float:
    """Wall time of ``ser predict`` failing before any network call (a malformed URI): imports only."""
    run = ser(
        COMMANDS["predict"](clip), tmp_path_factory.mktemp("startup"), {"MLFLOW_TRACKING_URI": "http://"}
    )
    assert run["rc"] == 1 and "MLFLOW_TRACKING_URI=http://: no host" in run["err"], run["err"]
    return run["wall"]


def assert_one_line_error(run: dict, *expected: str) -> None:
    lines = run["err"].strip().splitlines()
    assert run["rc"] == 1, run
    assert "Traceback" not in run["err"] + run["out"], run["err"]
    assert len(lines) == 1 and lines[0].startswith("error: "), run["err"]
    for text in expected:
        assert text in lines[0], lines[0]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_server_that_is_down_fails_in_seconds_with_one_line(command, clip, tmp_path, startup_s):
    uri = f"http://127.0.0.1:{closed_port()}"
    run = ser(COMMANDS[command](clip), tmp_path, {"MLFLOW_TRACKING_URI": uri})
    assert_one_line_error(
        run, f"error: {uri}: the MLflow tracking server does not answer (connection refused"
    )
    assert "no registered model" not in run["err"]
    assert run["wall"] < max(15.0, STARTUP_SLACK * startup_s + NETWORK_BUDGET_S), (run["wall"], startup_s)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_server_that_never_answers_fails_within_the_configured_budget(command, clip, tmp_path, startup_s):
    with silent_server() as port:
        uri = f"http://127.0.0.1:{port}"
        env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}  # the variable wins
        run = ser(COMMANDS[command](clip), tmp_path, env)
    assert_one_line_error(
        run, f"error: {uri}: the MLflow tracking server does not answer (no answer within 2 s"
    )
    assert run["wall"] < max(15.0, STARTUP_SLACK * startup_s + NETWORK_BUDGET_S), (run["wall"], startup_s)


def test_the_default_budget_gives_up_on_a_silent_server_in_about_ten_seconds(monkeypatch):
    """params.yaml's tracking.http_* (5 s, 1 retry), measured in-process without start-up noise."""
    from components.registry.model_io import use_store
    from components.settings import load_settings

    tracking = load_settings(ROOT / "params.yaml").tracking
    assert (tracking.http_timeout_s, tracking.http_max_retries) == (5, 1)
    for name in HTTP_ENV.values():
        monkeypatch.delenv(name, raising=False)  # undone after the test, whatever use_store sets
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(SerError, match=r"does not answer \(connection refused, 2 tries\)"):
        use_store(tracking, ROOT)  # also imports what a request needs, so the time below is the wait
    with silent_server() as port:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
        start = time.perf_counter()
        with pytest.raises(SerError, match=r"does not answer \(no answer within 5 s, 2 tries\)"):
            use_store(tracking, ROOT)
        elapsed = time.perf_counter() - start
    assert 9.5 < elapsed < 14.0, elapsed  # 2 tries x 5 s, no backoff before the first retry


def test_a_malformed_tracking_uri_is_one_line_naming_the_variable(clip, tmp_path):
    """The issue's case: a ``sqlite:/`` typo printed a 106-line SQLAlchemy traceback."""
    run = ser(COMMANDS["predict"](clip), tmp_path, {"MLFLOW_TRACKING_URI": "sqlite:/tmp/store.db"})
    assert_one_line_error(
        run,
        "error: MLFLOW_TRACKING_URI=sqlite:/tmp/store.db: not a SQLite URI; "
        "write sqlite:///relative/path.db or sqlite:////absolute/path.db",
    )


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("sqlite://store.db", "not a SQLite URI; write sqlite:///relative/path.db"),
        ("http://", "no host; write http://host:port"),
        ("https://127.0.0.1:port", "the port is not a number; write https://host:port"),
        ("htp://127.0.0.1:5000", "not a usable MLflow store (Model registry functionality is unavailable"),
        ("postgresql://ser@127.0.0.1:1/mlflow", "not a usable MLflow store ("),
    ],
)
def test_malformed_uris_name_the_variable_and_the_expected_form(uri, problem, monkeypatch, tmp_path):
    from components.registry.model_io import use_store

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(SerError) as caught:
        use_store(None, tmp_path)
    assert str(caught.value).startswith(f"MLFLOW_TRACKING_URI={uri}: {problem}")
    assert "\n" not in str(caught.value)


def test_a_malformed_uri_in_params_names_the_params_key(monkeypatch, tmp_path):
    from components.registry.model_io import use_store
    from components.settings import Tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(SerError) as caught:
        use_store(Tracking(tracking_uri="sqlite:/mlflow/mlflow.db"), tmp_path)
    assert str(caught.value) == (
        f"{tmp_path / 'params.yaml'} tracking.tracking_uri=sqlite:/mlflow/mlflow.db: not a SQLite URI; "
        "write sqlite:///relative/path.db or sqlite:////absolute/path.db"
    )


@pytest.fixture(scope="module")
def own_store(tmp_path_factory, mlflow_template, demo_features) -> Path:
    """A store (database and artifacts in one folder) holding a tiny champion, used by no other test."""
    import mlflow

    from components.registry.model_io import register_predictor
    from components.registry.promote import CHAMPION

    root = tmp_path_factory.mktemp("own-store")
    shutil.copy(mlflow_template, root / "mlflow.db")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # the experiment's artifacts go under ./mlruns
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        try:
            predictor = fit_tiny_predictor(demo_features / "data" / "features")
            register_predictor(predictor, MODEL_NAME, {"model_name": "logreg"}, CHAMPION)
        finally:
            mlflow.set_tracking_uri(None)
    return root


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file and folder under ``root``: its mtime and, for a file, its content hash."""
    state = {}
    for path in sorted(root.rglob("*")):
        stat = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        state[str(path.relative_to(root))] = (stat.st_mtime_ns, digest)
    return state


def read_only_command(store: Path, command: list[str]) -> list[str]:
    """``command`` run with ``store`` read-only: chmod for a user, a read-only bind mount for root.

    Skips when running as root and a private mount namespace cannot be made (root ignores chmod).
    """
    if os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "a-w", str(store)], check=True)
        return command
    if shutil.which("unshare") is None:
        pytest.skip("running as root (chmod does not stop root) and no `unshare` for a read-only mount")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(
            f"running as root (chmod does not stop root) and unshare -rm fails: {probe.stderr.strip()}"
        )
    # exit 98: the mount failed; 99: the store is still writable, so the check would prove nothing
    script = 'mount --bind -o ro "$0" "$0" || exit 98; touch "$0/.probe" 2>/dev/null && exit 99; exec "$@"'
    return ["unshare", "-rm", "sh", "-c", script, str(store), *command]


def test_predict_reads_a_read_only_store_and_writes_nothing_into_it(own_store, tmp_path, clip, monkeypatch):
    from components.registry.model_io import load_model

    before = snapshot(own_store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{own_store / 'mlflow.db'}")
    loaded = load_model(f"models:/{MODEL_NAME}@champion")  # writable: MLflow would write into it
    assert loaded.predictor is not None and loaded.description["version"] == "1"
    assert snapshot(own_store) == before
    command = [sys.executable, "-m", "cli", "predict", str(clip), "--json", str(tmp_path / "out.json")]
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{own_store / 'mlflow.db'}",
        "PYTHONPATH": str(ROOT),
    }
    try:
        done = subprocess.run(
            read_only_command(own_store, command), cwd=tmp_path, env=env, capture_output=True, text=True
        )
    finally:
        if os.geteuid() != 0:
            subprocess.run(["chmod", "-R", "u+w", str(own_store)], check=True)
    assert done.returncode not in (98, 99), done.stderr  # the store was read-only
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"model: {MODEL_NAME} v1 (champion)" in done.stderr
    assert "clip.wav" in done.stdout
    after = snapshot(own_store)
    assert after == before, sorted(set(after.items()) ^ set(before.items()))
