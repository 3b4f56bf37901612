"""Stage ``train``: every baseline under every evaluation protocol, concurrently, tracked in MLflow.

Each model × protocol × subset is a Prefect task in its own process. The flow logs one
parent MLflow run with a child run per model (and per fold), writes DVC metrics and a
confusion-matrix plot, refits the best model on all data as a raw-audio pyfunc, registers
it, and moves the ``champion`` alias only when it beats the current champion.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task

from components.errors import SerError
from components.evaluation.evaluate import (
    Evaluation,
    ModelSpec,
    evaluate_splits,
    prepare_data,
    protocol_settings,
    results_table,
)
from components.evaluation.metrics import confusion_pairs, format_table
from components.evaluation.protocols import make_splits
from components.models import check_model_sections
from components.paths import FEATURES_DIR, METRICS_DIR, PLOTS_DIR
from components.registry.publish import publish_best
from components.runtime.files import exit_on_error, write_json, write_text
from components.runtime.locks import hold_lock
from components.runtime.runners import local_cluster_kwargs, n_workers, orchestration
from components.settings import Settings, load_settings
from components.tracking.runs import (
    data_version,
    experiment_id,
    git_commit,
    log_evaluation,
    start_run,
    tracking_uri,
)
from flows import fail_cleanly, run_flow

TRAIN_METRICS = METRICS_DIR / "train.json"


def task_runner(settings: Mapping[str, Any]) -> Any:
    """The Prefect task runner of the train flow: a process pool, or Dask (a LocalCluster or an address)."""
    section = orchestration(settings)
    if section["task_runner"] == "process":
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=settings["train"]["n_workers"])
    from prefect_dask import DaskTaskRunner

    if section["dask_address"]:
        return DaskTaskRunner(address=section["dask_address"])
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster", cluster_kwargs=local_cluster_kwargs(section["dask_workers"])
    )


def _user_errors_are_final(task: Any, task_run: Any, state: Any) -> bool:
    """Retry crashes, not the user's mistakes (a SerError will fail the same way again)."""
    try:
        state.result()
    except SerError:
        return False
    except Exception:
        return True
    return False


@task(retry_condition_fn=_user_errors_are_final, retry_delay_seconds=2)
def evaluate_model(
    spec: ModelSpec, features_dir: Path, protocol: str, subset: str, settings: dict, n_threads: int
) -> Evaluation:
    """Score one model under one protocol and subset (runs in a worker process)."""
    import torch

    torch.set_num_threads(n_threads)
    data = prepare_data(spec, features_dir, subset, settings["speaker_norm"])
    splits = make_splits(data.labels, protocol, **protocol_settings(protocol, settings))
    return evaluate_splits(spec, data, splits, protocol, subset)


@flow(name="train")
@fail_cleanly
def train_stage(settings: Settings | None = None, features_dir: Path = FEATURES_DIR) -> dict[str, Any]:
    """Train and score every configured model concurrently, log to MLflow, publish the best.

    One run at a time: a second one (``dvc repro``, ``python -m flows.train``, a retrain flow)
    refuses with a message naming the first, which holds the lock on ``metrics/train.json``.

    Args:
        settings: The pipeline's settings; None reads params.yaml in the working folder.
        features_dir: The featurize stage's tables.
    """
    settings = settings or load_settings()
    check_model_sections(settings.models)
    params = settings.as_params()
    with hold_lock(TRAIN_METRICS, "train"):
        return train_and_publish(params, features_dir)


def train_and_publish(settings: dict[str, Any], features_dir: Path) -> dict[str, Any]:
    """The body of :func:`train_stage`, run under its lock."""
    from mlflow import MlflowClient

    logger = get_run_logger()
    evaluate, train, tracking = settings["evaluate"], settings["train"], settings["tracking"]
    specs = {name: ModelSpec.from_params(name, settings[name]) for name in train["models"]}
    runs = evaluate["runs"]
    n_threads = max(1, (os.cpu_count() or 1) // max(1, n_workers(settings)))
    started = time.perf_counter()
    futures = [
        evaluate_model.with_options(retries=train["retries"]).submit(
            spec, Path(features_dir), run["protocol"], run["subset"], evaluate, n_threads
        )
        for spec in specs.values()
        for run in runs
    ]
    results: list[Evaluation] = [future.result() for future in futures]
    wall = time.perf_counter() - started
    serial = sum(r.seconds for r in results)
    logger.info(
        "trained %d evaluations in %.1f s (%.1f s one at a time: %.2fx)",
        len(results),
        wall,
        serial,
        serial / wall,
    )

    client = MlflowClient(tracking_uri(tracking))
    experiment = experiment_id(client, tracking)
    version = data_version()
    parent = start_run(
        client, experiment, "train", tags={"data_version": version, "git_commit": git_commit()}
    )
    client.log_metric(parent, "concurrent_seconds", wall)
    client.log_metric(parent, "one_at_a_time_seconds", serial)
    client.log_param(parent, "speaker_norm", evaluate["speaker_norm"])
    extra = {"speaker_norm": evaluate["speaker_norm"], "data_version": version}
    for result in results:
        log_evaluation(client, experiment, parent, specs[result.model], result, extra)

    metric = evaluate["primary_metric"]
    primary = [r for r in results if (r.protocol, r.subset) == (runs[0]["protocol"], runs[0]["subset"])]
    best = max(primary, key=lambda r: r.summary[f"{metric}_mean"])
    rows = results_table(results, metric)
    client.log_text(parent, format_table(rows, list(rows[0])), "results.md")
    write_plot(best)
    decision = publish_best(client, experiment, parent, specs[best.model], best, settings, version, primary)
    client.set_terminated(parent)
    logger.info("best: %s (%s %.4f); %s", best.model, metric, best.summary[f"{metric}_mean"], decision.reason)
    return {
        "results": rows,
        "best": {"model": best.model, metric: best.summary[f"{metric}_mean"]},
        "registry": vars(decision),
        "seconds": {"concurrent": round(wall, 1), "one_at_a_time": round(serial, 1)},
    }


def write_plot(best: Evaluation) -> None:
    """The best model's pooled test predictions as a DVC confusion-matrix plot."""
    names = dict(zip(best.summary["classes"], best.summary["class_names"], strict=True))
    true, pred = confusion_pairs(best.summary["confusion"], best.summary["classes"])
    table = pd.DataFrame({"actual": [names[c] for c in true], "predicted": [names[c] for c in pred]})
    write_text(PLOTS_DIR / "confusion.csv", table.to_csv(index=False))


def main() -> None:
    """Entry point of the DVC stage."""
    settings = load_settings()
    runner = task_runner(settings.as_params())  # orchestration.task_runner: process pool or Dask
    with hold_lock(TRAIN_METRICS, "train"):  # before Prefect starts: a second run refuses at once
        metrics = run_flow(train_stage.with_options(task_runner=runner), settings=settings)
        write_json(TRAIN_METRICS, metrics)


if __name__ == "__main__":
    exit_on_error(main)
