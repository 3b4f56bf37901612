"""Publishing a model: log it under a refit run, register it, move ``champion`` only if it wins.

:func:`publish` is the one path, under one registry lock; :func:`publish_best` refits a baseline for it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient

from components.data.clip_checks import ClipLimits
from components.evaluation.evaluate import Evaluation, ModelSpec, fit_on_rows, prepare_data
from components.evaluation.protocols import actor_kfold
from components.evaluation.train_corpora import CorpusChoice
from components.features.sets import extract_params
from components.features.store import recorded_params
from components.paths import CLIPS_TABLE, FEATURES_DIR
from components.registry.model_card import (
    CARD_ARTIFACT,
    CORPORA_TAG,
    LABEL_SET_TAG,
    CardFacts,
    card_description,
    corpus_tags,
    recorded_columns,
    render_card,
)
from components.registry.model_io import log_predictor
from components.registry.promote import Decision, promote_if_better, register, registry_lock
from components.serving.adaptation import STATS_KEY, training_stats
from components.serving.pyfunc import EmotionPredictor
from components.settings import Evaluate, Featurize, Preprocess, Settings
from components.tracking.runs import git_commit, log_training_data, tracked_run


def refit(spec: ModelSpec, subset_data: Any, evaluate: Evaluate) -> Any:
    """Fit on every clip; deep models stop early on validation actors held out of the fit."""
    fold = actor_kfold(subset_data.labels, n_folds=evaluate.n_folds, n_val_actors=evaluate.n_val_actors)[0]
    val = fold.val if spec.early_stops else np.array([], dtype=int)
    train = np.setdiff1d(np.arange(len(subset_data)), val)
    return fit_on_rows(spec, subset_data, train, val)


def publish_best(
    client: MlflowClient,
    experiment: str,
    parent: str,
    spec: ModelSpec,
    best: Evaluation,
    data_version: str,
    primary: list[Evaluation],
    settings: Settings,
    choice: CorpusChoice | None = None,
) -> Decision:
    """Refit the best baseline ``spec`` as a raw-audio pyfunc and :func:`publish` it.

    Args:
        client: The MLflow client of the tracking store.
        experiment: The experiment of the refit run.
        parent: The train stage's parent run.
        spec: The best model's spec.
        best: Its evaluation under the primary protocol and subset.
        data_version: The DVC hash of the data that trained it.
        primary: Every model's evaluation under the primary protocol (fresh scores by kind).
        settings: The typed settings the train stage loaded: ``evaluate`` (folds, metric),
            ``tracking.model_name``, ``validate``'s per-clip checks and the model sections' kinds.
        choice: The clips of ``train.corpora`` and their labels, as the models were scored on.
    """
    evaluate = settings.evaluate
    if evaluate.speaker_norm:
        return Decision("", False, "speaker-normalised models need many clips per speaker: not registered")
    metric = evaluate.primary_metric
    score = float(best.summary[f"{metric}_mean"])
    data = prepare_data(spec, FEATURES_DIR, best.subset, speaker_norm=False, choice=choice)
    validate = settings.validate_
    extract = model_extract(spec, settings.preprocess, settings.featurize)
    predictor = EmotionPredictor(
        model=refit(spec, data, evaluate),
        stats_sets=spec.stats_sets,
        uses_logmel=spec.uses_logmel,
        sequence=spec.sequence,
        extract=extract,
        info={
            "model": spec.name,
            "kind": spec.kind,
            f"{metric}": score,
            "n_train_clips": len(data),
            # the per-clip checks its training clips passed: every way of predicting applies these
            "clip_checks": ClipLimits.from_mapping(validate.model_dump()).as_dict(),
        },
    )
    if spec.stats_sets:  # the training mean speaker adaptation re-centres on (serving/adaptation.py)
        stats = data.inputs(None, spec.stats_sets, False)["stats"]
        predictor.info[STATS_KEY] = training_stats(stats, evaluate.speaker_min_clips)
    kinds = {name: section.kind for name, section in settings.models.items()}
    fresh = {kinds.get(r.model, r.model): r.summary[f"{metric}_mean"] for r in primary}
    model = {"model_kind": spec.kind, "model_name": spec.name, "data_version": data_version}
    log_model = functools.partial(log_predictor, predictor)
    registry_name = settings.tracking.model_name
    facts = CardFacts(extract, training_clips(data.labels), settings.ingest.describe())
    return publish(client, registry_name, experiment, parent, best, metric, model, log_model, fresh, facts)


def training_clips(labels: pd.DataFrame) -> pd.DataFrame:
    """The training clips' labels with what the clips table records of them: ``audio_dur``, ``corpus``."""
    recorded = recorded_columns(CLIPS_TABLE, labels["clip_id"])
    return labels.assign(**{column: labels["clip_id"].map(values) for column, values in recorded.items()})


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
    facts: CardFacts | None = None,
) -> Decision:
    """Log a refit model under a child run, register it with its tags, and move ``champion`` if it wins.

    The version's description, and the run's artifact ``model_card.md``, is its model card
    (:mod:`components.registry.model_card`); the run's dataset input is the training clips.

    The one way a stage publishes a model (the baselines and wav2vec2 alike).

    Args:
        client: The MLflow client of the tracking store (its URI is also the fluent API's).
        registry_name: The registered model (``tracking.model_name``).
        experiment: The experiment of the child run ``refit/<model_name>``.
        parent: The stage's parent run.
        best: The evaluation whose mean ``metric`` is the candidate's score.
        metric: The primary metric.
        model_tags: ``model_kind``, ``model_name``, ``data_version`` and any tags of the kind's own
            (e.g. ``pretrained``); the protocol, subset, score, commit, parent run, training
            corpora and label set (``ser.corpora``, ``ser.label_set``) are added here.
        log_model: Logs the model inside the active MLflow run and returns its model URI.
        fresh_scores: Model kind → its score in this run (see :func:`promote_if_better`).
        facts: What the model card says beyond the evaluation: preprocessing, training clips
            (also logged as the run's dataset input), data source.

    Returns:
        The registry's decision.
    """
    import mlflow

    score = float(best.summary[f"{metric}_mean"])
    tags = model_tags | {"protocol": best.protocol, "subset": best.subset, "primary_metric": metric}
    # a 3-fold score (the quick profile) is not the same measurement as a 6-fold one
    tags["n_folds"] = str(len(getattr(best, "folds", None) or []))
    tags |= {"primary_metric_value": f"{score:.6f}", "git_commit": git_commit(), "pipeline_run": parent}
    facts = facts or CardFacts()
    tags |= corpus_tags(best, facts)  # on the refit run and the version
    mlflow.set_tracking_uri(client.tracking_uri)
    with tracked_run(client, experiment, f"refit/{tags['model_name']}", parent, tags) as run:
        if facts.training_clips is not None:
            log_training_data(client, run, facts.training_clips, tags["data_version"])
        with mlflow.start_run(run_id=run):
            model_uri = log_model()
            mlflow.log_metric(f"cv_{metric}", score)
    # a model of other corpora or labels (train.corpora, the label map) is not the same measurement either
    same = ("data_version", "protocol", "subset", "primary_metric", "n_folds", CORPORA_TAG, LABEL_SET_TAG)
    comparable = {k: tags[k] for k in same}
    # One critical section from registering to moving the alias: another run waits for it.
    with registry_lock(client, f"publishing {tags['model_name']}"):
        version = register(client, registry_name, model_uri, run, tags)
        decision = promote_if_better(client, registry_name, version, score, comparable, fresh_scores)
        card = render_card(registry_name, version, tags, best, decision, facts)
        client.update_model_version(registry_name, version, description=card_description(card))
    client.log_text(run, card, CARD_ARTIFACT)
    return decision


def model_extract(spec: ModelSpec, preprocess: Preprocess, featurize: Featurize) -> dict[str, Any]:
    """The extraction settings a published model predicts with: those its feature tables recorded.

    The ``preprocess``/``featurize`` settings fill only what no table it reads records
    (e.g. ``clip_dur``, the window length, for a model of clip statistics alone).
    """
    read = [*spec.stats_sets, *([spec.sequence] if spec.uses_logmel else [])]
    return extract_params(preprocess, featurize) | recorded_params(FEATURES_DIR, read)
