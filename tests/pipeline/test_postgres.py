"""The scale-out path for real: MLflow and the Prefect server on PostgreSQL, one retrain and a prediction.

A PostgreSQL server from Debian's package runs on 127.0.0.1 (installed with apt-get when missing
and this runs as root; skipped with the reason otherwise); ``mlflow server`` keeps its runs and
registry there with a local artifact root, and ``prefect server`` its flow runs. The served
``retrain`` deployment trains, registers and promotes through both; ``ser predict`` then answers
from the Postgres-backed registry alone. ``compose.yaml`` runs the same three services.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

from components.data.ravdess import EMOTION_NAMES
from tests.conftest import (
    ROOT,
    free_port,
    make_clone,
    serve_deployments,
    start_mlflow_server,
    start_prefect_server,
    stop,
)
from tests.pipeline.test_deploy import retrain_via_api

COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())


class Postgres(NamedTuple):
    port: int
    psql: str

    def url(self, database: str, driver: str) -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def query(self, database: str, sql: str) -> list[list[str]]:
        """Rows of ``sql`` as lists of strings, read with ``psql`` (not through MLflow or Prefect)."""
        command = [self.psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database]
        done = subprocess.run([*command, "-AtF", "\t", "-c", sql], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return [line.split("\t") for line in done.stdout.splitlines()]


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian's layout), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


def install_postgres() -> Path:
    """Debian's ``postgresql`` package, installed when missing; skip with the reason when it cannot be."""
    if postgres_bin() is None:
        if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.skip("PostgreSQL is not installed and cannot be here (needs root and apt-get)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        done = subprocess.run(
            ["apt-get", "install", "-y", "-q", "postgresql"],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if done.returncode != 0 or postgres_bin() is None:
            pytest.skip(f"apt-get install postgresql failed: {done.stderr.strip()[-300:]}")
    return postgres_bin()


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster on a free 127.0.0.1 port holding empty ``mlflow`` and ``prefect``."""
    import tempfile

    bin_dir = install_postgres()
    # not under pytest's base folder: its 0700 parents would shut the postgres user out
    root = Path(tempfile.mkdtemp(prefix="ser-postgres-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: its files belong to the postgres user
        shutil.chown(root, "postgres", "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()
    pg_ctl = [*as_owner, str(bin_dir / "pg_ctl"), "-D", str(data)]
    try:
        initdb = [*as_owner, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
        done = subprocess.run([*initdb, "-E", "UTF8"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
        done = subprocess.run(
            [*pg_ctl, "-o", options, "-l", str(root / "server.log"), "-w", "-t", "120", "start"],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, (root / "server.log").read_text()
        server = Postgres(port, str(bin_dir / "psql"))
        for name in ("mlflow", "prefect"):
            server.query("postgres", f"CREATE DATABASE {name}")
        yield server
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def ser_predict(wav: Path, tracking_uri: str, cwd: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """``ser predict`` in a fresh process whose only link to the model is ``MLFLOW_TRACKING_URI``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    done = subprocess.run(
        [sys.executable, "-m", "cli", "predict", str(wav), "--json", "out.json"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done, json.loads((cwd / "out.json").read_text())


def test_compose_runs_the_three_services_the_test_runs():
    services = COMPOSE["services"]
    assert set(services) == {"postgres", "mlflow", "prefect"}
    assert services["postgres"]["image"].startswith("postgres:16")
    mlflow, prefect = services["mlflow"], services["prefect"]
    assert mlflow["image"].startswith("ghcr.io/mlflow/mlflow") and "psycopg2" in " ".join(mlflow["command"])
    server = " ".join(mlflow["command"])
    assert "--backend-store-uri postgresql+psycopg2://" in server and "@postgres:5432/mlflow" in server
    assert "--artifacts-destination" in server and "5000:5000" in mlflow["ports"]
    assert prefect["image"] == "prefecthq/prefect:3-latest" and "4200:4200" in prefect["ports"]
    url = prefect["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert url.startswith("postgresql+asyncpg://") and url.endswith("@postgres:5432/prefect")
    for name in ("mlflow", "prefect"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in services["postgres"]
    # both databases live in the one server: the image creates the first, an init script the second
    assert services["postgres"]["environment"]["POSTGRES_DB"] == "mlflow"
    (init,) = services["postgres"]["configs"]
    assert init["target"].startswith("/docker-entrypoint-initdb.d/")
    assert "CREATE DATABASE prefect" in COMPOSE["configs"][init["source"]]["content"]


@pytest.mark.slow
def test_retrain_registers_and_ser_predicts_through_postgres_backed_servers(
    tmp_path, mlflow_template, postgres
):
    from mlflow import MlflowClient

    from components.registry.promote import CHAMPION

    mlflow_port, prefect_port = free_port(), free_port()
    tracking = f"http://127.0.0.1:{mlflow_port}"
    api = f"http://127.0.0.1:{prefect_port}/api"
    project = make_clone(tmp_path / "project", mlflow_template)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["tracking"]["tracking_uri"] = tracking  # the project's store is the shared server
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (project / "mlflow" / "mlflow.db").unlink()  # nothing may fall back to the local SQLite store

    mlflow_server = start_mlflow_server(
        postgres.url("mlflow", "postgresql+psycopg2"),
        tmp_path / "artifacts",
        mlflow_port,
        tmp_path / "mlflow.log",
    )
    try:
        prefect_server = start_prefect_server(
            tmp_path / "prefect-home", prefect_port, postgres.url("prefect", "postgresql+asyncpg")
        )
        try:
            served = serve_deployments(project, api, tmp_path / "serve.log")
            try:
                run, _ = retrain_via_api(api)
                # read before serving stops: stopping it may mark its runs cancelled afterwards
                states = postgres.query("prefect", f"SELECT state_type FROM flow_run WHERE id = '{run.id}'")
            finally:
                stop(served)
        finally:
            stop(prefect_server)
        assert run.state.is_completed(), (run.state.message, (tmp_path / "serve.log").read_text()[-3000:])

        # The flow run and the registered version live in PostgreSQL, read without Prefect or MLflow.
        assert states == [["COMPLETED"]]
        rows = postgres.query("mlflow", "SELECT name, version FROM model_versions")
        assert rows == [["ravdess-emotion", "1"]]
        aliases = postgres.query("mlflow", "SELECT alias, version FROM registered_model_aliases")
        assert [CHAMPION, "1"] in aliases
        assert not (project / "mlflow" / "mlflow.db").exists()

        champion = MlflowClient(tracking).get_model_version_by_alias("ravdess-emotion", CHAMPION)
        assert champion.version == "1" and champion.source.startswith(("models:/", "mlflow-artifacts:/"))
        assert any((tmp_path / "artifacts").rglob("MLmodel"))  # the local artifact root holds the model

        wav = sorted((project / "data" / "raw").rglob("*.wav"))[0]
        done, results = ser_predict(wav, tracking, tmp_path)
        assert "model: ravdess-emotion v1 (champion" in done.stderr
        (result,) = results["files"]
        assert result["label"] in EMOTION_NAMES
        assert abs(sum(result["probabilities"].values()) - 1) < 1e-4
    finally:
        stop(mlflow_server)
