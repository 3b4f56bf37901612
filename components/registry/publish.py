"""Refit the best model on all data, log it as a raw-audio pyfunc, register it, gate ``champion``."""

from __future__ import annotations

from typing import Any

import numpy as np
from mlflow import MlflowClient

from components.evaluation.evaluate import Evaluation, ModelSpec, fit_on_rows, prepare_data
from components.evaluation.protocols import actor_kfold
from components.features.sets import extract_params
from components.paths import FEATURES_DIR
from components.registry.model_io import log_predictor
from components.registry.promote import Decision, promote_if_better, register, registry_lock
from components.serving.pyfunc import EmotionPredictor
from components.tracking.runs import git_commit, start_run, tracking_uri


def refit(spec: ModelSpec, subset_data: Any, settings: dict[str, Any]) -> Any:
    """Fit on every clip; deep models stop early on validation actors held out of the fit."""
    evaluate = settings["evaluate"]
    fold = actor_kfold(
        subset_data.labels, n_folds=evaluate["n_folds"], n_val_actors=evaluate["n_val_actors"]
    )[0]
    val = fold.val if spec.early_stops else np.array([], dtype=int)
    train = np.setdiff1d(np.arange(len(subset_data)), val)
    return fit_on_rows(spec, subset_data, train, val)


def publish_best(
    client: MlflowClient,
    experiment: str,
    parent: str,
    spec: ModelSpec,
    best: Evaluation,
    settings: dict[str, Any],
    data_version: str,
    primary: list[Evaluation],
) -> Decision:
    """Refit ``spec``, log it as a pyfunc under a child run, register it, and gate the alias."""
    import mlflow

    evaluate, tracking = settings["evaluate"], settings["tracking"]
    if evaluate["speaker_norm"]:
        return Decision("", False, "speaker-normalised models need many clips per speaker: not registered")
    metric = evaluate["primary_metric"]
    score = float(best.summary[f"{metric}_mean"])
    data = prepare_data(spec, FEATURES_DIR, best.subset, speaker_norm=False)
    predictor = EmotionPredictor(
        model=refit(spec, data, settings),
        stats_sets=spec.stats_sets,
        uses_logmel=spec.uses_logmel,
        extract=extract_params(settings["preprocess"], settings["featurize"]),
        info={"model": spec.name, "kind": spec.kind, f"{metric}": score, "n_train_clips": len(data)},
    )
    tags = {
        "model_kind": spec.kind,
        "model_name": spec.name,
        "data_version": data_version,
        "protocol": best.protocol,
        "subset": best.subset,
        "primary_metric": metric,
        "primary_metric_value": f"{score:.6f}",
        "git_commit": git_commit(),
        "pipeline_run": parent,
    }
    run = start_run(client, experiment, f"refit/{spec.name}", parent, tags)
    mlflow.set_tracking_uri(tracking_uri(tracking))
    with mlflow.start_run(run_id=run):
        model_uri = log_predictor(predictor)
        mlflow.log_metric(f"cv_{metric}", score)
    fresh = {spec_kind(r, settings): r.summary[f"{metric}_mean"] for r in primary}
    comparable = {k: tags[k] for k in ("data_version", "protocol", "subset", "primary_metric")}
    # One critical section from registering to moving the alias: another run waits for it.
    with registry_lock(client, f"publishing {spec.name}"):
        version = register(client, tracking["model_name"], model_uri, run, tags)
        return promote_if_better(client, tracking["model_name"], version, score, comparable, fresh)


def spec_kind(result: Evaluation, settings: dict[str, Any]) -> str:
    """The model kind behind an evaluation (its params section's ``kind``)."""
    return settings[result.model].get("kind", result.model)
