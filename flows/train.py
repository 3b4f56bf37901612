"""Stage ``train``: every baseline under every evaluation protocol, concurrently, tracked in MLflow.

Each model × protocol × subset is a Prefect task in its own process. The flow logs one
parent MLflow run with a child run per model (and per fold), writes DVC metrics and a
confusion-matrix plot, refits the best model on all data as a raw-audio pyfunc, registers
it, and moves the ``champion`` alias only when it beats the current champion.
"""

from __future__ import annotations

import os
import time
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
from components.evaluation.train_corpora import CorpusChoice, load_choice
from components.models import check_model_sections
from components.paths import CLIPS_TABLE, FEATURES_DIR, METRICS_DIR, PLOTS_DIR
from components.registry.publish import publish_best
from components.runtime.files import exit_on_error, write_json, write_text
from components.runtime.locks import hold_lock
from components.runtime.runners import local_cluster_kwargs, n_workers
from components.settings import Evaluate, Settings, apply_profile, load_settings
from components.tracking.runs import (
    data_version,
    experiment_id,
    git_commit,
    log_evaluation,
    log_values,
    pooled_metrics,
    tracked_run,
    tracking_uri,
)
from components.tracking.store import check_server
from flows import fail_cleanly, run_flow

TRAIN_METRICS = METRICS_DIR / "train.json"
PROGRESS_KEY = "train-progress"


def task_runner(settings: Settings) -> Any:
    """The Prefect task runner of the train flow: a process pool, or Dask (a LocalCluster or an address)."""
    section = settings.orchestration
    if section.task_runner == "process":
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=settings.train.n_workers)
    from prefect_dask import DaskTaskRunner

    if section.dask_address:
        return DaskTaskRunner(address=section.dask_address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster", cluster_kwargs=local_cluster_kwargs(section.dask_workers)
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


@task(
    task_run_name="{spec.name}/{protocol}/{subset}",  # as its MLflow run; its folds are that run's children
    retry_condition_fn=_user_errors_are_final,
    retry_delay_seconds=2,
)
def evaluate_model(
    spec: ModelSpec,
    features_dir: Path,
    protocol: str,
    subset: str,
    evaluate: Evaluate,
    n_threads: int,
    adapt_min_clips: int | None = None,
    choice: CorpusChoice | None = None,
) -> Evaluation:
    """Score one model under one protocol and subset (runs in a worker process).

    ``adapt_min_clips``: score with speaker adaptation (``ser evaluate --speaker-adapt``).
    ``choice``: the clips of ``train.corpora`` and their labels; None: every clip as it is.
    """
    import torch

    torch.set_num_threads(n_threads)
    data = prepare_data(spec, features_dir, subset, evaluate.speaker_norm, choice)
    splits = make_splits(data.labels, protocol, **protocol_settings(protocol, evaluate))
    return evaluate_splits(spec, data, splits, protocol, subset, adapt_min_clips)


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
    settings = settings or apply_profile(load_settings())
    check_model_sections(settings.models)
    with hold_lock(TRAIN_METRICS, "train"):
        return train_and_publish(settings, features_dir)


def train_and_publish(settings: Settings, features_dir: Path) -> dict[str, Any]:
    """The body of :func:`train_stage`, run under its lock, inside the parent MLflow run.

    The parent run is open from the first model to the registry's decision (with CPU and memory
    use if ``tracking.system_metrics``); it ends FAILED with the reason as a tag if anything raises.
    """
    from mlflow import MlflowClient

    tracking = settings.tracking
    check_server(tracking, tracking_uri(tracking))  # a server that does not answer fails in seconds
    client = MlflowClient(tracking_uri(tracking))
    experiment = experiment_id(client, tracking)
    version = data_version()
    tags = {"data_version": version, "git_commit": git_commit()}
    system_metrics = tracking.system_metrics
    with tracked_run(client, experiment, "train", tags=tags, system_metrics=system_metrics) as parent:
        return train_models(settings, features_dir, client, experiment, parent, version)


def wait_with_progress(futures: list[Any], started: float) -> list[Evaluation]:
    """The futures' results in submission order, saying as each finishes how far the stage is.

    One log line per finished evaluation (``n/total``, elapsed) on the terminal and in the flow
    run's logs, and the ``train-progress`` artifact in the Prefect UI: the stage runs for minutes.
    """
    from prefect.artifacts import create_progress_artifact, update_progress_artifact
    from prefect.futures import as_completed

    logger = get_run_logger()
    total = len(futures)
    artifact = create_progress_artifact(0.0, key=PROGRESS_KEY, description=f"{total} evaluations")
    index = {future: i for i, future in enumerate(futures)}
    results: list[Any] = [None] * total
    for n, future in enumerate(as_completed(futures), start=1):
        result = results[index[future]] = future.result()
        logger.info(
            "train %d/%d done: %s/%s/%s in %.0f s; %.0f s elapsed",
            n,
            total,
            result.model,
            result.protocol,
            result.subset,
            result.seconds,
            time.perf_counter() - started,
        )
        update_progress_artifact(artifact, 100.0 * n / total)
    return results


def train_models(
    settings: Settings, features_dir: Path, client: Any, experiment: str, parent: str, version: str
) -> dict[str, Any]:
    """Score every model concurrently, log each under ``parent``, publish the best."""
    logger = get_run_logger()
    evaluate, train = settings.evaluate, settings.train
    specs = {name: ModelSpec.from_params(name, settings.models[name].as_dict()) for name in train.models}
    runs = evaluate.runs
    choice = load_choice(CLIPS_TABLE, train.corpora, Path(evaluate.label_map))  # None: all clips, as they are
    if choice is not None:
        logger.info("train.corpora: %s", choice.describe())
    n_threads = max(1, (os.cpu_count() or 1) // max(1, n_workers(settings.orchestration, train.n_workers)))
    started = time.perf_counter()
    futures = [
        evaluate_model.with_options(retries=train.retries).submit(
            spec, Path(features_dir), run.protocol, run.subset, evaluate, n_threads, choice=choice
        )
        for spec in specs.values()
        for run in runs
    ]
    results = wait_with_progress(futures, started)
    wall = time.perf_counter() - started
    serial = sum(r.seconds for r in results)
    logger.info(
        "trained %d evaluations in %.1f s (%.1f s one at a time: %.2fx)",
        len(results),
        wall,
        serial,
        serial / wall,
    )

    seconds = {"concurrent_seconds": wall, "one_at_a_time_seconds": serial}
    log_values(client, parent, {"speaker_norm": evaluate.speaker_norm}, seconds)
    extra = {"speaker_norm": evaluate.speaker_norm, "data_version": version}
    for result in results:
        log_evaluation(client, experiment, parent, specs[result.model], result, extra)

    metric = evaluate.primary_metric
    primary = [r for r in results if (r.protocol, r.subset) == (runs[0].protocol, runs[0].subset)]
    best = max(primary, key=lambda r: r.summary[f"{metric}_mean"])
    rows = results_table(results, metric)
    client.log_text(parent, format_table(rows, list(rows[0])), "results.md")
    write_plot(best)
    decision = publish_best(
        client, experiment, parent, specs[best.model], best, version, primary, settings, choice=choice
    )
    logger.info("best: %s (%s %.4f); %s", best.model, metric, best.summary[f"{metric}_mean"], decision.reason)
    corpora = {} if choice is None else {"corpora": choice.counts()}  # RAVDESS alone: as before
    return {
        "results": rows,
        "best": {"model": best.model, metric: best.summary[f"{metric}_mean"]},
        "registry": vars(decision),
        "seconds": {"concurrent": round(wall, 1), "one_at_a_time": round(serial, 1)},
        **corpora,
    }


def write_plot(best: Evaluation) -> None:
    """The best model's pooled test predictions as DVC plots: confusion pairs and per-class recall.

    ``dvc.yaml`` shows the pairs as a row-normalised confusion matrix (classes are imbalanced
    and UAR, the mean recall, is the headline) and the recalls as bars.
    """
    names = dict(zip(best.summary["classes"], best.summary["class_names"], strict=True))
    true, pred = confusion_pairs(best.summary["confusion"], best.summary["classes"])
    table = pd.DataFrame({"actual": [names[c] for c in true], "predicted": [names[c] for c in pred]})
    write_text(PLOTS_DIR / "confusion.csv", table.to_csv(index=False))
    per_class = pooled_metrics(best)["per_class"]
    recall = pd.DataFrame(
        [{"emotion": name, "recall": round(v["recall"], 4)} for name, v in per_class.items() if v["support"]]
    )
    write_text(PLOTS_DIR / "recall.csv", recall.to_csv(index=False))


def main() -> None:
    """Entry point of the DVC stage."""
    settings = apply_profile(load_settings())  # train.profile quick: the trimmed first run
    runner = task_runner(settings)  # orchestration.task_runner: process pool or Dask
    with hold_lock(TRAIN_METRICS, "train"):  # before Prefect starts: a second run refuses at once
        metrics = run_flow(train_stage.with_options(task_runner=runner), settings=settings)
        write_json(TRAIN_METRICS, {"profile": settings.train.profile, **metrics})


if __name__ == "__main__":
    exit_on_error(main)
