"""Every model of the comparison behind one factory, so a trainer treats them all alike.

The X convention: every model's ``fit``/``predict``/``predict_proba`` takes the same dict ::

    X = {
        "logmel": array [n_clips, n_mels, n_frames],  # float16/float32 log-mel sequences (deep models)
        "stats": array [n_clips, n_stats] or None,     # the hand-made clip statistics
    }

with ``y`` an array of ``n_clips`` labels (e.g. emotion names). Classical models (``rf``,
``svm``, ``logreg``, ``mlp``) read only ``X["stats"]``; deep models (``cnn``, ``cnn_lstm``,
``cnn_gru``) read ``X["logmel"]`` and, when it is not None, ``X["stats"]`` through a dense
branch. Keys a model does not read may be left out. Validation clips (normally held-out
actors) go to :func:`fit_model`: deep models stop early on them, classical ones ignore them.

A classical model with ``logmel_stats: true`` also reads ``X["logmel"]`` and appends its
functionals (:mod:`components.models.logmel_stats`) to the statistics. ``ensemble`` soft-votes
over member models (:mod:`components.models.ensemble`); it reads ``X["stats_layout"]`` at fit
time to give each member the columns of its own feature sets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from components.errors import SerError
from components.models.classical import CLASSICAL_KINDS, SelectStats, build_classical
from components.models.ensemble import SoftVote, member_reads_logmel
from components.models.nets import ARCHS, CNN, CRNN, arch_param_names
from components.models.torch_classifier import TRAIN_DEFAULTS, TorchClassifier
from components.models.training import Log

DEEP_KINDS = tuple(ARCHS)
ENSEMBLE_KIND = "ensemble"
MODEL_KINDS = (*CLASSICAL_KINDS, *DEEP_KINDS, ENSEMBLE_KIND)

__all__ = [
    "CNN",
    "CRNN",
    "MODEL_KINDS",
    "SoftVote",
    "TorchClassifier",
    "build_classical",
    "build_model",
    "early_stops",
    "fit_model",
    "reads_logmel",
]


def build_model(kind: str, params: Mapping[str, Any] | None = None) -> BaseEstimator:
    """A fresh, unfitted estimator of ``kind`` that takes the X dict.

    Args:
        kind: One of :data:`MODEL_KINDS`: ``rf``, ``svm``, ``logreg``, ``mlp``, ``cnn``,
            ``cnn_lstm``, ``cnn_gru``, ``ensemble``.
        params: Flat settings. Classical kinds: classifier arguments (see
            :func:`components.models.classical.build_classical`) and ``logmel_stats`` (bool).
            Deep kinds: net arguments (``n_filters``, ``kernel_size``, ``dropout``,
            ``dense_units``, ``pool_size``, ``rnn_hidden``) and training settings (keys of
            ``TRAIN_DEFAULTS``) side by side. ``ensemble``: ``members`` (name → a model
            section: ``kind``, ``features``, settings) and optional ``weights`` (name → weight).

    Returns:
        For classical kinds a Pipeline ``SelectStats → impute → scale → clf``; for deep kinds a
        :class:`TorchClassifier`; for ``ensemble`` a :class:`SoftVote`.

    Raises:
        SerError: Unknown ``kind`` or parameter.
    """
    params = dict(params or {})
    if kind in CLASSICAL_KINDS:
        logmel_stats = bool(params.pop("logmel_stats", False))
        pipeline = build_classical(kind, **params)
        return Pipeline([("select", SelectStats(logmel_stats)), *pipeline.steps])
    if kind == ENSEMBLE_KIND:
        unknown = sorted(set(params) - {"members", "weights"})
        if unknown:
            raise SerError(f"ensemble: unknown parameter(s) {', '.join(unknown)}; it takes members, weights")
        for name, section in (params.get("members") or {}).items():
            if section.get("kind", name) == ENSEMBLE_KIND:
                raise SerError(f"ensemble member {name}: an ensemble cannot hold an ensemble")
        return SoftVote(params.get("members"), params.get("weights"), build_model, DEEP_KINDS)
    if kind not in DEEP_KINDS:
        raise SerError(f"unknown model {kind!r}: choose one of {', '.join(MODEL_KINDS)}")
    arch_names = arch_param_names(kind)
    unknown = sorted(set(params) - set(arch_names) - set(TRAIN_DEFAULTS))
    if unknown:
        raise SerError(
            f"{kind}: unknown parameter(s) {', '.join(unknown)}; net: {', '.join(arch_names)}; "
            f"training: {', '.join(TRAIN_DEFAULTS)}"
        )
    arch_params = {k: v for k, v in params.items() if k in arch_names}
    train_params = {k: v for k, v in params.items() if k not in arch_names}
    return TorchClassifier(kind, arch_params, train_params)


def fit_model(
    model: BaseEstimator,
    X: Mapping[str, Any],
    y: Any,
    X_val: Mapping[str, Any] | None = None,
    y_val: Any = None,
    log: Log | None = None,
) -> BaseEstimator:
    """Fit any :func:`build_model` estimator the same way.

    Deep models early-stop on ``X_val``/``y_val`` (or carve their own validation share when
    None) and report each epoch to ``log``; classical models fit on ``X`` alone and ignore both.

    Returns:
        The fitted ``model``.
    """
    if isinstance(model, TorchClassifier | SoftVote):
        return model.fit(X, y, X_val, y_val, log=log)
    return model.fit(X, y)


def reads_logmel(kind: str, params: Mapping[str, Any]) -> bool:
    """Whether a model of ``kind`` with these settings reads ``X["logmel"]``."""
    if kind == ENSEMBLE_KIND:
        members = params.get("members") or {}
        return any(member_reads_logmel(section, DEEP_KINDS) for section in members.values())
    return member_reads_logmel({"kind": kind, **params}, DEEP_KINDS)


def early_stops(kind: str, params: Mapping[str, Any]) -> bool:
    """Whether a model of ``kind`` trains on validation clips by early stopping (deep kinds, or an
    ensemble with a deep member); the others train on training and validation clips together."""
    if kind == ENSEMBLE_KIND:
        members = params.get("members") or {}
        return any(section.get("kind", name) in DEEP_KINDS for name, section in members.items())
    return kind in DEEP_KINDS


def check_model_sections(sections: Mapping[str, Any], source: str = "params.yaml") -> None:
    """Let :func:`build_model` refuse a setting its kind does not take, as one line naming the section.

    Called where models are built (the train stage, ``ser evaluate``, the experiments), not when
    settings are read: reading them must not import the models' libraries.

    Args:
        sections: Model sections by name, each with ``kind`` and ``settings()`` (the keys
            :func:`build_model` takes), as :class:`components.settings.ModelSection`.
        source: The file named in the message.

    Raises:
        SerError: The first section whose settings its model refuses.
    """
    for name, section in sections.items():
        try:
            model = build_model(section.kind, section.settings())
            steps = [step for _, step in getattr(model, "steps", [])]
            for step in [*steps, *(getattr(step, "estimator", None) for step in steps)]:  # a wrapped SVC too
                if hasattr(step, "_parameter_constraints"):  # scikit-learn checks values' types and ranges
                    step._validate_params()
        except SerError as err:  # its message starts with the kind; the section's name says more
            raise SerError(f"{source}: {name}: {str(err).removeprefix(section.kind + ': ')}") from None
        except (TypeError, ValueError) as err:
            raise SerError(f"{source}: {name}: {' '.join(str(err).split())}") from None
