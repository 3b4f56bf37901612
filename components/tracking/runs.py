"""MLflow tracking with explicit run ids (never the thread-local active run)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from components.evaluation.evaluate import Evaluation, ModelSpec
from components.evaluation.metrics import (
    compute_metrics,
    confusion_pairs,
    format_table,
    plot_confusion,
    plot_learning_curves,
    plot_recall,
)
from components.paths import CLIPS_TABLE
from components.settings import Tracking


def tracking_uri(tracking: Tracking) -> str:
    """``MLFLOW_TRACKING_URI`` when set (a shared server), else ``tracking.tracking_uri``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or tracking.tracking_uri


def store_uri(tracking: Tracking, project: Path) -> str:
    """The tracking URI with a relative SQLite path resolved against the project, not the working folder."""
    uri = tracking_uri(tracking)
    path = uri.removeprefix("sqlite:///")
    if uri.startswith("sqlite:///") and not Path(path).is_absolute():
        return f"sqlite:///{(project / path).resolve()}"
    return uri


def experiment_id(client: MlflowClient, tracking: Tracking, name: str | None = None) -> str:
    """Experiment ``name`` (default ``tracking.experiment``), made with its artifact folder on first use."""
    name = name or tracking.experiment
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    if client.tracking_uri.startswith(("http://", "https://")):
        return client.create_experiment(name)  # the server decides where artifacts go
    location = tracking.artifact_location
    if "://" not in location:
        Path(location).mkdir(parents=True, exist_ok=True)
        location = Path(location).resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


PROCESS_TAG = "ser.process"  # host:pid:start time of the process that owns a RUNNING run
END_REASON_TAG = "ser.end_reason"  # why a run ended FAILED or KILLED
BATCH_SIZE = 100  # MLflow takes at most 100 params (1000 metrics) in one log_batch call
SYSTEM_METRICS_INTERVAL_S = 5.0  # MLflow's default (10 s) would see little of a minute-long stage


def process_tag(pid: int | None = None) -> str:
    """``host:pid:start time`` of a process: the start time tells a reused pid from the original."""
    import psutil

    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{int(psutil.Process(pid).create_time())}"


def start_run(
    client: MlflowClient, experiment: str, name: str, parent: str | None = None, tags: dict | None = None
) -> str:
    """Create a run and return its id; ``parent`` nests it under another run.

    The run is tagged with this process (:data:`PROCESS_TAG`), so a later run can tell that it
    was left RUNNING by a process that no longer exists (:func:`end_orphaned_runs`).
    """
    all_tags = {MLFLOW_RUN_NAME: name, PROCESS_TAG: process_tag(), **(tags or {})}
    if parent:
        all_tags[MLFLOW_PARENT_RUN_ID] = parent
    return client.create_run(experiment, tags=all_tags, run_name=name).info.run_id


def _process_alive(tag: str) -> bool:
    """Whether the process a :data:`PROCESS_TAG` names still runs (other hosts' count as alive)."""
    import psutil

    host, _, rest = tag.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True  # not ours to judge: a run on another machine may well be going on
    try:
        return process_tag(int(pid)) == tag
    except psutil.Error:  # no such process (or not ours to read)
        return False


def end_orphaned_runs(client: MlflowClient, experiment: str) -> list[str]:
    """End as KILLED the runs left RUNNING by a process of this host that has died (a kill -9, a crash).

    Returns:
        The ids of the runs ended, each tagged with :data:`END_REASON_TAG`.
    """
    ended = []
    for run in client.search_runs([experiment], "attributes.status = 'RUNNING'", max_results=1000):
        owner = run.data.tags.get(PROCESS_TAG)
        if owner is None or _process_alive(owner):
            continue
        reason = f"process {owner} ended without closing the run (killed); found by a later run"
        client.set_tag(run.info.run_id, END_REASON_TAG, reason)
        client.set_terminated(run.info.run_id, "KILLED")
        ended.append(run.info.run_id)
    return ended


@contextlib.contextmanager
def tracked_run(
    client: MlflowClient,
    experiment: str,
    name: str,
    parent: str | None = None,
    tags: dict | None = None,
    system_metrics: bool = False,
) -> Iterator[str]:
    """A run that is never left RUNNING: FINISHED, FAILED on an error, KILLED on Ctrl-C or exit.

    A top-level run first ends as KILLED what a dead process left RUNNING
    (:func:`end_orphaned_runs`). The reason of a FAILED or KILLED end is the tag
    :data:`END_REASON_TAG` (:func:`end_run`); the error is re-raised.

    Args:
        client: The tracking store's client.
        experiment: The run's experiment.
        name: The run name.
        parent: A run to nest it under.
        tags: Tags of the run.
        system_metrics: Sample CPU and memory use (``system/...`` metrics) while the run is open
            (``tracking.system_metrics``; MLflow's monitor, which needs psutil).
    """
    if parent is None:  # a top-level run sweeps up what a dead process left, its children included
        end_orphaned_runs(client, experiment)
    run = start_run(client, experiment, name, parent, tags)
    monitor = None
    if system_metrics:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(
            run, sampling_interval=SYSTEM_METRICS_INTERVAL_S, tracking_uri=client.tracking_uri
        )
        monitor.start()
    try:
        yield run
    except BaseException as err:
        if monitor is not None:
            monitor.finish()
        end_run(client, run, err)
        raise
    if monitor is not None:
        monitor.finish()
    client.set_terminated(run)


def end_run(client: MlflowClient, run: str, error: BaseException) -> None:
    """End ``run`` because of ``error``: KILLED for Ctrl-C or an exit, else FAILED; the reason as a tag."""
    killed = isinstance(error, KeyboardInterrupt | SystemExit | GeneratorExit)
    reason = f"{type(error).__name__}: {error}".strip().rstrip(":")
    client.set_tag(run, END_REASON_TAG, reason[:5000])
    client.set_terminated(run, "KILLED" if killed else "FAILED")


def log_values(
    client: MlflowClient,
    run: str,
    params: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
) -> None:
    """Params and metrics of a run in as few ``log_batch`` calls as MLflow allows."""
    now = int(time.time() * 1000)
    params_list = [Param(key, str(value)[:500]) for key, value in (params or {}).items()]
    metrics_list = [Metric(key, float(value), now, 0) for key, value in (metrics or {}).items()]
    log_steps(client, run, metrics_list, params_list)


def log_steps(
    client: MlflowClient, run: str, metrics: list[Metric], params: list[Param] | None = None
) -> None:
    """Metric values (any steps) and params in batches of :data:`BATCH_SIZE`."""
    params = params or []
    for start in range(0, max(len(metrics), len(params), 1), BATCH_SIZE):
        chunk_metrics, chunk_params = metrics[start : start + BATCH_SIZE], params[start : start + BATCH_SIZE]
        if chunk_metrics or chunk_params:
            client.log_batch(run, metrics=chunk_metrics, params=chunk_params)


def history_metrics(history: dict[str, list[float]]) -> list[Metric]:
    """A training history as MLflow metrics with ``step`` = epoch (1-based): a learning curve."""
    now = int(time.time() * 1000)
    return [
        Metric(f"epoch_{key}", float(value), now, epoch)
        for key, values in history.items()
        for epoch, value in enumerate(values, start=1)
        if value == value  # NaN (e.g. no validation loss) would break MLflow's charts
    ]


def dataset_digest(version: str) -> str:
    """The hash in a data version (``dvc:<md5>.dir``, ``clips:<hash>``): a dataset digest (36 chars max)."""
    return version.partition(":")[2].removesuffix(".dir")[:36]


def log_training_data(client: MlflowClient, run: str, clips: pd.DataFrame, version: str) -> None:
    """The training clips table as the run's MLflow dataset input, its digest the data's DVC hash.

    A registered version leads to its run, the run to this dataset, and the digest to the
    exact ``data/raw`` (``dvc.lock``) or clips (:func:`clips_version`) that trained it.
    """
    import warnings

    import mlflow.data

    with warnings.catch_warnings():  # a path "can be interpreted in multiple ways"; integer columns
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(
            clips.reset_index(drop=True),
            source=str(CLIPS_TABLE),
            targets="emotion" if "emotion" in clips.columns else None,
            name="training-clips",
            digest=dataset_digest(version),
        )
    tags = [InputTag("mlflow.data.context", "training"), InputTag("data_version", version)]
    client.log_inputs(run, [DatasetInput(Dataset(**_entity_fields(dataset.to_dict())), tags)])


def _entity_fields(info: dict[str, Any]) -> dict[str, Any]:
    keys = ("name", "digest", "source_type", "source", "schema", "profile")
    return {key: info.get(key) for key in keys}


def git_commit() -> str:
    """The current commit of the working tree, or ``unknown`` outside git."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except OSError:
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def scalar_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The numeric summary entries that MLflow can plot."""
    return {k: float(v) for k, v in summary.items() if isinstance(v, int | float) and v == v}


def classification_report(metrics: dict[str, Any]) -> str:
    """Per-class precision, recall, F1 and support as a Markdown table."""
    rows = [{"emotion": name, **values} for name, values in metrics["per_class"].items()]
    return format_table(rows, ["emotion", "precision", "recall", "f1", "support"])


def log_evaluation(
    client: MlflowClient, experiment: str, parent: str, spec: ModelSpec, result: Evaluation, extra: dict
) -> str:
    """One run per model × protocol × subset, with a child run per fold.

    Logs params and mean/sd metrics (in batches), the pooled confusion matrix as counts and as
    shares of each true class (figures and JSON), per-class recall bars, the classification
    report of the pooled predictions and the training time; a deep model's fold runs get its
    learning curve (``epoch_*`` metrics, step = epoch) and the model run a figure of them all.
    """
    name = f"{spec.name}/{result.protocol}/{result.subset}"
    tags = {"model": spec.name, "protocol": result.protocol}
    with tracked_run(client, experiment, name, parent, tags) as run:
        params = {"kind": spec.kind, "features": ",".join(spec.stats_sets), "logmel": spec.uses_logmel}
        params |= {"sequence": spec.sequence} if spec.uses_logmel else {}  # which sequence set it read
        params |= {f"model.{k}": v for k, v in spec.params.items()} | extra
        params |= {"protocol": result.protocol, "subset": result.subset}
        metrics = scalar_metrics(result.summary)
        # subset all: speech and song apart
        for channel, summary in result.summary.get("by_channel", {}).items():
            metrics |= {f"{channel}_{k}": v for k, v in scalar_metrics(summary).items() if k != "n_folds"}
        log_values(client, run, params, metrics)
        log_figures(client, run, result, name)
        client.log_dict(run, {f.name: f.metrics for f in result.folds}, "fold_metrics.json")
        client.log_text(run, pooled_report(result), "classification_report.md")
        for fold in result.folds:
            fold_tags = {"fold": fold.name}
            with tracked_run(client, experiment, f"{name}/{fold.name}", run, fold_tags) as fold_run:
                test_actors = ",".join(map(str, fold.test_actors)) or "random"
                fold_metrics = {k: fold.metrics[k] for k in ("accuracy", "uar", "macro_f1", "weighted_f1")}
                fold_metrics["train_seconds"] = fold.train_seconds
                log_values(client, fold_run, {"test_actors": test_actors}, fold_metrics)
                log_steps(client, fold_run, history_metrics(fold.history))
    return run


def log_figures(client: MlflowClient, run: str, result: Evaluation, title: str) -> None:
    """The pooled confusion matrix (counts; shares of each true class), recall bars, learning curves."""
    pooled = {"confusion": result.summary["confusion"], "class_names": result.summary["class_names"]}
    client.log_dict(run, pooled, "confusion_matrix.json")
    counts = plot_confusion(pooled["confusion"], pooled["class_names"], title)
    client.log_figure(run, counts, "confusion_matrix.png")
    normalized = plot_confusion(pooled["confusion"], pooled["class_names"], title, normalized=True)
    client.log_figure(run, normalized, "confusion_matrix_normalized.png")
    per_class = pooled_metrics(result)["per_class"]
    client.log_figure(run, plot_recall(per_class, f"{title}: recall per class"), "recall_per_class.png")
    histories = {fold.name: fold.history for fold in result.folds if fold.history}
    if histories:
        client.log_figure(run, plot_learning_curves(histories, title), "learning_curves.png")


def pooled_metrics(result: Evaluation) -> dict[str, Any]:
    """:func:`compute_metrics` of all folds' test predictions together."""
    codes = result.summary["classes"]
    true, pred = confusion_pairs(result.summary["confusion"], codes)
    return compute_metrics(true, pred, classes=codes)


def pooled_report(result: Evaluation) -> str:
    """The classification report of all folds' test predictions together."""
    return classification_report(pooled_metrics(result))


def data_version(clips_table: Path = CLIPS_TABLE) -> str:
    """The DVC hash of ``data/raw`` from dvc.lock, else a hash of the validated clips' contents."""
    found = raw_data_version()
    return found or clips_version(pd.read_parquet(clips_table, columns=["clip_id", "content_hash"]))


def raw_data_version(lock: Path = Path("dvc.lock")) -> str | None:
    """The DVC hash of ``data/raw`` recorded in ``lock`` (None before the ingest stage has run)."""
    if not lock.exists():
        return None
    for out in yaml.safe_load(lock.read_text()).get("stages", {}).get("ingest", {}).get("outs", []):
        if out.get("path") == "data/raw":
            return f"dvc:{out['md5']}"
    return None


def clips_version(clips: pd.DataFrame) -> str:
    """A hash of the clips' contents (``clip_id``, ``content_hash`` columns), in clip order."""
    hashes = clips.sort_values("clip_id")["content_hash"]
    return "clips:" + hashlib.sha256("".join(hashes).encode()).hexdigest()[:16]
