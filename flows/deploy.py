"""``make flows``: serve the pipeline's deployments from one long-lived process.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.deploy

Deployments (they appear in the Prefect UI, where each can be run with its parameters):

- ``retrain/retrain``: ``dvc repro`` and promotion, on ``retrain.schedule`` (cron) and on demand.
- ``evaluate/evaluate``: a registered model version scored on a data source.
- ``predict-batch/predict-batch``: a folder of audio → a CSV of predictions by ``champion``.

Flow runs start in subprocesses of this one, in this checkout (``SER_PROJECT_DIR`` is set to it).
The same deployments are defined for work pools in prefect.yaml (``prefect deploy --all``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from components.errors import SerError
from components.runtime.files import exit_on_error
from components.settings import load_params
from flows.evaluate import evaluate_version
from flows.predict_batch import predict_batch
from flows.retrain import retrain

DEFAULT_API_URL = "http://127.0.0.1:4200/api"  # where `make prefect-ui` serves the API


def build_deployments(settings: dict[str, Any]) -> list[Any]:
    """The three deployments, with the retrain schedule and defaults from params.yaml."""
    from prefect.schedules import Cron

    options = settings["retrain"]
    schedules = [Cron(options["schedule"], timezone=options["timezone"])] if options["schedule"] else []
    return [
        retrain.to_deployment(
            name="retrain",
            schedules=schedules,
            concurrency_limit=1,  # one retrain per checkout: a second waits in the queue
            description="Re-run the DVC pipeline on the source data and promote the new model if it wins.",
            tags=["retrain", "dvc"],
        ),
        evaluate_version.to_deployment(
            name="evaluate",
            parameters={"source": settings["ingest"]["source"]},
            description="Score a registered model version (default champion) on a data source.",
            tags=["evaluate"],
        ),
        predict_batch.to_deployment(
            name="predict-batch",
            description="A folder of audio files -> a CSV of predictions by the champion model.",
            tags=["predict"],
        ),
    ]


def check_api(url: str) -> None:
    """Fail in one line when no Prefect server answers at ``url``."""
    import httpx

    try:
        httpx.get(url.rstrip("/") + "/health", timeout=5).raise_for_status()
    except httpx.HTTPError as err:
        raise SerError(
            f"no Prefect server answers at {url} ({type(err).__name__}); start one with `make prefect-ui` "
            "or set PREFECT_API_URL to yours"
        ) from err


def main() -> None:
    """Serve the deployments until stopped (Ctrl-C); scheduled runs start from here."""
    from prefect import serve

    url = os.environ.setdefault("PREFECT_API_URL", DEFAULT_API_URL)
    check_api(url)
    os.environ.setdefault("SER_PROJECT_DIR", str(Path.cwd()))
    serve(*build_deployments(load_params()), limit=2)


if __name__ == "__main__":
    exit_on_error(main)
