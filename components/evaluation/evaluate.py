"""Cross-validated evaluation of one model on a dataset, split by split."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.data.ravdess import EMOTIONS, VOCAL_CHANNELS
from components.errors import SerError
from components.evaluation.dataset import Dataset, load_dataset
from components.evaluation.metrics import compute_metrics, summarize_folds
from components.evaluation.protocols import Split, select_subset
from components.evaluation.train_corpora import CorpusChoice, apply_choice
from components.models import ENSEMBLE_KIND, build_model, early_stops, fit_model, reads_logmel
from components.settings import Evaluate


@dataclass(frozen=True)
class ModelSpec:
    """A model of the comparison: its kind, settings and the inputs it reads."""

    name: str
    kind: str
    params: dict[str, Any]
    stats_sets: tuple[str, ...]
    sequence: str = "logmel"  # the sequence set it reads when it reads one (components.features.sets)

    @property
    def uses_logmel(self) -> bool:
        """Whether the model reads a sequence set (deep kinds, ``logmel_stats``, ensembles of either):
        ``sequence``, log-mel unless its section says otherwise."""
        return reads_logmel(self.kind, self.params)

    @property
    def early_stops(self) -> bool:
        """Deep models (and ensembles holding one) train on the training actors and stop early on
        the validation actors; the others train on both."""
        return early_stops(self.kind, self.params)

    @classmethod
    def from_params(cls, name: str, section: Mapping[str, Any]) -> ModelSpec:
        """Build from a model's params.yaml section: ``kind``, ``features``, ``sequence`` and model settings.

        An ensemble without ``features`` reads the union of its members' sets, in order of
        first mention, and the one sequence set its members read.

        Raises:
            SerError: An ensemble's members read different sequence sets.
        """
        kind = section.get("kind", name)
        settings = {k: v for k, v in section.items() if k not in ("kind", "features", "sequence")}
        default = ["handmade"]
        sequences = {section.get("sequence") or "logmel"}
        if kind == ENSEMBLE_KIND:
            members = (settings.get("members") or {}).values()
            default = list(dict.fromkeys(s for member in members for s in member.get("features", [])))
            sequences = {m.get("sequence") or "logmel" for m in members if reads_logmel(m.get("kind", ""), m)}
            if len(sequences) > 1:
                raise SerError(f"{name}: its members read different sequence sets {sorted(sequences)}")
        sequence = next(iter(sequences), "logmel")
        return cls(name, kind, settings, tuple(section.get("features", default)), sequence)


@dataclass
class FoldResult:
    """One split's scores and costs."""

    name: str
    test_actors: tuple[int, ...]
    metrics: dict[str, Any]
    train_seconds: float
    predict_seconds: float
    n_train: int
    n_test: int
    by_channel: dict[str, dict[str, Any]] = field(default_factory=dict)
    # one row per test clip: clip_id, the group labels (PREDICTION_GROUPS), true and pred codes
    predictions: pd.DataFrame | None = None
    # a deep model's per-epoch training history (train_loss, val_recall, ...): its learning curve
    history: dict[str, list[float]] = field(default_factory=dict)


PREDICTION_GROUPS: tuple[str, ...] = ("actor", "gender", "intensity", "statement", "vocal_channel")


@dataclass
class Evaluation:
    """Every split of one model under one protocol and subset, and their summary.

    Under subset ``all`` the summary also holds ``by_channel``: the same fitted models scored on
    their speech and on their song test clips apart (a model trained on speech and song, as the
    registered one is, judged on speech alone).
    """

    model: str
    protocol: str
    subset: str
    folds: list[FoldResult] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def fit_on_rows(spec: ModelSpec, data: Dataset, train: np.ndarray, val: np.ndarray | None) -> Any:
    """Fit a fresh model on ``train`` rows, early-stopping deep models on ``val`` rows."""
    model = build_model(spec.kind, spec.params)
    y = data.labels["emotion"].to_numpy()
    X = data.inputs(train, spec.stats_sets, spec.uses_logmel)
    if val is not None and len(val) and spec.early_stops:
        X_val = data.inputs(val, spec.stats_sets, spec.uses_logmel)
        return fit_model(model, X, y[train], X_val, y[val])
    return fit_model(model, X, y[train])


def _channel_metrics(
    labels: pd.DataFrame, test: np.ndarray, y_true: np.ndarray, predicted: np.ndarray, classes: list[int]
) -> dict[str, dict[str, Any]]:
    """Metrics of one fold's predictions on each vocal channel's test clips (channels with clips),
    over the fold's classes (a song clip may be predicted as disgust or surprised)."""
    channel = labels["vocal_channel"].to_numpy()[test]
    return {
        name: compute_metrics(y_true[channel == code], predicted[channel == code], classes=classes)
        for code, name in VOCAL_CHANNELS.items()
        if (channel == code).any()
    }


def evaluate_splits(
    spec: ModelSpec,
    data: Dataset,
    splits: Sequence[Split],
    protocol: str,
    subset: str,
    adapt_min_clips: int | None = None,
) -> Evaluation:
    """Fit and score ``spec`` on every split; the test clips never influence fitting.

    Classical models train on the training and validation actors together (they have no
    early stopping); deep models (and ensembles holding one) train on the training actors and
    stop early on the validation actors. With ``adapt_min_clips``, each test actor with that
    many clips is re-centred on the training mean with all their clips, as deployed speaker
    adaptation does (components/serving/adaptation.py; no labels used).
    """
    started = time.perf_counter()
    result = Evaluation(spec.name, protocol, subset)
    y = data.labels["emotion"].to_numpy()
    classes = sorted(EMOTIONS) if subset != "song" else sorted(set(y))
    scored = [c for c in classes if c in set(y)]  # every fold (and channel) is scored over the same classes
    for split in splits:
        train = split.train if spec.early_stops else np.union1d(split.train, split.val)
        t0 = time.perf_counter()
        model = fit_on_rows(spec, data, train, split.val)
        t1 = time.perf_counter()
        inputs = data.inputs(split.test, spec.stats_sets, spec.uses_logmel)
        if adapt_min_clips is not None:
            inputs = _adapted(spec, data, train, split.test, inputs, adapt_min_clips)
        predicted = model.predict(inputs)
        t2 = time.perf_counter()
        metrics = compute_metrics(y[split.test], predicted, classes=scored)
        n_test = len(split.test)
        fold = FoldResult(split.name, split.test_actors, metrics, t1 - t0, t2 - t1, len(train), n_test)
        fold.predictions = fold_predictions(data.labels, split.test, y[split.test], predicted)
        fold.history = dict(getattr(getattr(model, "train_result_", None), "history", None) or {})
        if subset == "all":
            fold.by_channel = _channel_metrics(data.labels, split.test, y[split.test], predicted, scored)
        result.folds.append(fold)
    result.summary = summarize_folds([fold.metrics for fold in result.folds])
    channels = [name for name in VOCAL_CHANNELS.values() if all(name in f.by_channel for f in result.folds)]
    if result.folds and channels:
        result.summary["by_channel"] = {
            name: summarize_folds([fold.by_channel[name] for fold in result.folds]) for name in channels
        }
    result.summary["train_seconds"] = float(sum(f.train_seconds for f in result.folds))
    result.seconds = time.perf_counter() - started
    return result


def fold_predictions(
    labels: pd.DataFrame, test: np.ndarray, y_true: np.ndarray, predicted: np.ndarray
) -> pd.DataFrame:
    """A fold's test clips with the labels a model card breaks results down by, and their predictions."""
    columns = ["clip_id", *(c for c in PREDICTION_GROUPS if c in labels.columns)]
    frame = labels.iloc[test][columns].reset_index(drop=True)
    return frame.assign(true=np.asarray(y_true).astype(int), pred=np.asarray(predicted).astype(int))


def pooled_predictions(result: Evaluation) -> pd.DataFrame | None:
    """Every fold's test predictions in one table (None when the folds kept none)."""
    frames = [fold.predictions for fold in result.folds if fold.predictions is not None]
    if not frames or len(frames) != len(result.folds):
        return None
    return pd.concat(frames, ignore_index=True)


def _adapted(
    spec: ModelSpec, data: Dataset, train: np.ndarray, test: np.ndarray, inputs: dict, min_clips: int
) -> dict:
    """The test inputs with each actor's clips re-centred on the training rows' mean."""
    from components.serving.adaptation import adapt_by_speaker

    if inputs["stats"] is None:
        raise SerError(f"{spec.name}: speaker adaptation re-centres scalar features; this model reads none")
    reference = data.inputs(train, spec.stats_sets, False)["stats"].astype(np.float64).mean(axis=0)
    actors = data.labels["actor"].to_numpy()[test].tolist()
    stats, _ = adapt_by_speaker(inputs["stats"], actors, reference, min_clips)
    return {**inputs, "stats": stats}


def protocol_settings(protocol: str, evaluate: Evaluate) -> dict[str, Any]:
    """The ``evaluate`` settings a protocol reads, as :func:`make_splits` takes them."""
    if protocol == "actor-kfold":
        return {"n_folds": evaluate.n_folds, "n_val_actors": evaluate.n_val_actors}
    if protocol == "holdout":
        return {"test_actors": list(evaluate.test_actors), "n_val_actors": evaluate.n_val_actors}
    return {"test_share": evaluate.random_test_share, "seed": evaluate.random_seed}


def prepare_data(
    spec: ModelSpec, features_dir: Path, subset: str, speaker_norm: bool, choice: CorpusChoice | None = None
) -> Dataset:
    """The model's inputs for one subset, optionally z-scored per speaker.

    ``choice``: the corpora trained on (``train.corpora``) and their labels; None: every clip as it is.
    """
    data = apply_choice(load_dataset(features_dir, spec.stats_sets, spec.uses_logmel, spec.sequence), choice)
    data = data.subset(data.labels.index.isin(select_subset(data.labels, subset).index))
    return data.normalized_per_speaker() if speaker_norm else data


def results_table(results: list[Evaluation], metric: str) -> list[dict[str, Any]]:
    """One row per model × protocol × subset: mean ± sd of the headline metrics."""
    rows = []
    for r in results:
        s = r.summary
        row = {"model": r.model, "protocol": r.protocol, "subset": r.subset, "n_folds": s["n_folds"]}
        for key in ("accuracy", "uar", "weighted_f1"):
            row[key] = round(s[f"{key}_mean"], 4)
            row[f"{key}_sd"] = round(s[f"{key}_sd"], 4) if s[f"{key}_sd"] == s[f"{key}_sd"] else None
        for channel, summary in s.get("by_channel", {}).items():  # subset all: speech and song apart
            row[f"{channel}_accuracy"] = round(summary["accuracy_mean"], 4)
        row["train_seconds"] = round(s["train_seconds"], 1)
        rows.append(row)
    return sorted(rows, key=lambda row: (row["protocol"], row["subset"], -row[metric]))
