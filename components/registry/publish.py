"""Publishing a model: log it under a refit run, register it, move ``champion`` only if it wins.

:func:`publish` is the one path, under one registry lock; :func:`publish_best` refits a baseline for it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from mlflow import MlflowClient

from components.evaluation.evaluate import Evaluation, ModelSpec, fit_on_rows, prepare_data
from components.evaluation.protocols import actor_kfold
from components.features.sets import extract_params
from components.features.store import recorded_params
from components.paths import FEATURES_DIR
from components.registry.model_io import log_predictor
from components.registry.promote import Decision, promote_if_better, register, registry_lock
from components.serving.pyfunc import EmotionPredictor
from components.tracking.runs import git_commit, start_run


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
    """Refit the best baseline ``spec`` as a raw-audio pyfunc and :func:`publish` it."""
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
        extract=model_extract(spec, settings),
        info={
            "model": spec.name,
            "kind": spec.kind,
            f"{metric}": score,
            "n_train_clips": len(data),
            # the silence test its training clips passed: every way of predicting applies this one
            "silence": {
                key: float(settings["validate"][key]) for key in ("silence_dbfs", "max_silent_share")
            },
        },
    )
    fresh = {spec_kind(r, settings): r.summary[f"{metric}_mean"] for r in primary}
    model = {"model_kind": spec.kind, "model_name": spec.name, "data_version": data_version}
    log_model = functools.partial(log_predictor, predictor)
    return publish(client, tracking["model_name"], experiment, parent, best, metric, model, log_model, fresh)


def publish(
    client: MlflowClient,
    registry_name: str,
    experiment: str,
    parent: str,
    best: Evaluation,
    metric: str,
    model_tags: dict[str, str],
    log_model: Callable[[], str],
    fresh_scores: dict[str, float],
) -> Decision:
    """Log a refit model under a child run, register it with its tags, and move ``champion`` if it wins.

    The one way a stage publishes a model (the baselines and wav2vec2 alike).

    Args:
        client: The MLflow client of the tracking store (its URI is also the fluent API's).
        registry_name: The registered model (``tracking.model_name``).
        experiment: The experiment of the child run ``refit/<model_name>``.
        parent: The stage's parent run.
        best: The evaluation whose mean ``metric`` is the candidate's score.
        metric: The primary metric.
        model_tags: ``model_kind``, ``model_name``, ``data_version`` and any tags of the kind's own
            (e.g. ``pretrained``); the protocol, subset, score, commit and parent run are added here.
        log_model: Logs the model inside the active MLflow run and returns its model URI.
        fresh_scores: Model kind → its score in this run (see :func:`promote_if_better`).

    Returns:
        The registry's decision.
    """
    import mlflow

    score = float(best.summary[f"{metric}_mean"])
    tags = model_tags | {"protocol": best.protocol, "subset": best.subset, "primary_metric": metric}
    tags |= {"primary_metric_value": f"{score:.6f}", "git_commit": git_commit(), "pipeline_run": parent}
    run = start_run(client, experiment, f"refit/{tags['model_name']}", parent, tags)
    mlflow.set_tracking_uri(client.tracking_uri)
    with mlflow.start_run(run_id=run):
        model_uri = log_model()
        mlflow.log_metric(f"cv_{metric}", score)
    comparable = {k: tags[k] for k in ("data_version", "protocol", "subset", "primary_metric")}
    # One critical section from registering to moving the alias: another run waits for it.
    with registry_lock(client, f"publishing {tags['model_name']}"):
        version = register(client, registry_name, model_uri, run, tags)
        return promote_if_better(client, registry_name, version, score, comparable, fresh_scores)


def model_extract(spec: ModelSpec, settings: dict[str, Any]) -> dict[str, Any]:
    """The extraction settings a published model predicts with: those its feature tables recorded.

    params.yaml's ``preprocess``/``featurize`` values fill only what no table it reads records
    (e.g. ``clip_dur``, the window length, for a model of clip statistics alone).
    """
    read = [*spec.stats_sets, *(["logmel"] if spec.uses_logmel else [])]
    return extract_params(settings["preprocess"], settings["featurize"]) | recorded_params(FEATURES_DIR, read)


def spec_kind(result: Evaluation, settings: dict[str, Any]) -> str:
    """The model kind behind an evaluation (its params section's ``kind``)."""
    return settings[result.model].get("kind", result.model)
