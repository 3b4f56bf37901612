"""MLflow tracking with explicit run ids (never the thread-local active run)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from components.evaluation.evaluate import Evaluation, ModelSpec
from components.evaluation.metrics import compute_metrics, confusion_pairs, format_table, plot_confusion
from components.paths import CLIPS_TABLE


def tracking_uri(settings: dict[str, Any]) -> str:
    """``MLFLOW_TRACKING_URI`` when set (a shared server), else ``mlflow.tracking_uri``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or settings["tracking_uri"]


def store_uri(settings: dict[str, Any], project: Path) -> str:
    """The tracking URI with a relative SQLite path resolved against the project, not the working folder."""
    uri = tracking_uri(settings)
    path = uri.removeprefix("sqlite:///")
    if uri.startswith("sqlite:///") and not Path(path).is_absolute():
        return f"sqlite:///{(project / path).resolve()}"
    return uri


def experiment_id(client: MlflowClient, settings: dict[str, Any]) -> str:
    """The pipeline's experiment, created with its artifact folder on first use."""
    found = client.get_experiment_by_name(settings["experiment"])
    if found is not None:
        return found.experiment_id
    if client.tracking_uri.startswith(("http://", "https://")):
        return client.create_experiment(settings["experiment"])  # the server decides where artifacts go
    location = settings["artifact_location"]
    if "://" not in location:
        Path(location).mkdir(parents=True, exist_ok=True)
        location = Path(location).resolve().as_uri()
    return client.create_experiment(settings["experiment"], artifact_location=location)


def start_run(
    client: MlflowClient, experiment: str, name: str, parent: str | None = None, tags: dict | None = None
) -> str:
    """Create a run and return its id; ``parent`` nests it under another run."""
    all_tags = {MLFLOW_RUN_NAME: name, **(tags or {})}
    if parent:
        all_tags[MLFLOW_PARENT_RUN_ID] = parent
    return client.create_run(experiment, tags=all_tags, run_name=name).info.run_id


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

    Logs params, mean/sd metrics, the pooled confusion matrix as a figure and JSON, the
    classification report of the pooled predictions and the training time.
    """
    name = f"{spec.name}/{result.protocol}/{result.subset}"
    run = start_run(client, experiment, name, parent, {"model": spec.name, "protocol": result.protocol})
    params = {"kind": spec.kind, "features": ",".join(spec.stats_sets), "logmel": spec.uses_logmel}
    params |= {f"model.{k}": v for k, v in spec.params.items()} | extra
    params |= {"protocol": result.protocol, "subset": result.subset}
    for key, value in params.items():
        client.log_param(run, key, str(value)[:500])
    for key, value in scalar_metrics(result.summary).items():
        client.log_metric(run, key, value)
    for channel, summary in result.summary.get("by_channel", {}).items():  # subset all: speech, song apart
        for key, value in scalar_metrics(summary).items():
            if key != "n_folds":
                client.log_metric(run, f"{channel}_{key}", value)
    pooled = {"confusion": result.summary["confusion"], "class_names": result.summary["class_names"]}
    client.log_dict(run, pooled, "confusion_matrix.json")
    figure = plot_confusion(pooled["confusion"], pooled["class_names"], name)
    client.log_figure(run, figure, "confusion_matrix.png")
    client.log_dict(run, {f.name: f.metrics for f in result.folds}, "fold_metrics.json")
    client.log_text(run, pooled_report(result), "classification_report.md")
    for fold in result.folds:
        fold_run = start_run(client, experiment, f"{name}/{fold.name}", run, {"fold": fold.name})
        client.log_param(fold_run, "test_actors", ",".join(map(str, fold.test_actors)) or "random")
        for key in ("accuracy", "uar", "macro_f1", "weighted_f1"):
            client.log_metric(fold_run, key, fold.metrics[key])
        client.log_metric(fold_run, "train_seconds", fold.train_seconds)
        client.set_terminated(fold_run)
    client.set_terminated(run)
    return run


def pooled_report(result: Evaluation) -> str:
    """The classification report of all folds' test predictions together."""
    codes = result.summary["classes"]
    true, pred = confusion_pairs(result.summary["confusion"], codes)
    return classification_report(compute_metrics(true, pred, classes=codes))


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
