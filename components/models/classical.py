"""Classical classifiers on the clip-statistics vector (the hand-made features), as sklearn pipelines.

Every pipeline is ``SimpleImputer → StandardScaler → classifier``: the imputer guards against
a NaN feature (a silent clip's spectral contrast, say), the scaler matters for SVM, logistic
regression and the MLP and costs a forest nothing. All are seeded through ``random_state``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from components.errors import SerError
from components.models.logmel_stats import summarize

# class_weight="balanced": RAVDESS holds half as many neutral clips as clips of any other emotion.
CLASSICAL_DEFAULTS: dict[str, dict[str, Any]] = {
    "rf": {"n_estimators": 500, "class_weight": "balanced", "n_jobs": 1, "random_state": 0},
    "svm": {
        "C": 10.0,
        "kernel": "rbf",
        "gamma": "scale",
        "class_weight": "balanced",
        "random_state": 0,
    },
    "logreg": {"C": 1.0, "max_iter": 2000, "class_weight": "balanced", "random_state": 0},
    "mlp": {
        "hidden_layer_sizes": (256, 128),
        "alpha": 1e-3,
        "early_stopping": True,
        "max_iter": 500,
        "random_state": 0,
    },
}
CLASSIFIERS: dict[str, type[ClassifierMixin]] = {
    "rf": RandomForestClassifier,
    "svm": SVC,
    "logreg": LogisticRegression,
    "mlp": MLPClassifier,
}
CLASSICAL_KINDS = tuple(CLASSIFIERS)


def build_classical(kind: str, **params: Any) -> Pipeline:
    """A fresh, unfitted ``SimpleImputer → StandardScaler → classifier`` pipeline.

    Args:
        kind: ``"rf"`` (random forest), ``"svm"`` (RBF SVC with probabilities), ``"logreg"``
            or ``"mlp"`` (sklearn's MLPClassifier with early stopping). The SVC's probabilities are
            Platt scaling on 5-fold cross-validated decision values, which is what
            ``SVC(probability=True)`` computed before sklearn 1.9 deprecated it:
            ``CalibratedClassifierCV(SVC(...), ensemble=False)``; ``params`` go to the SVC.
        **params: Keyword arguments of the classifier, overriding :data:`CLASSICAL_DEFAULTS`
            (e.g. ``n_estimators=200, n_jobs=2`` for ``"rf"``; ``random_state`` is the seed).
            A list for ``hidden_layer_sizes`` (as YAML gives it) is accepted.

    Returns:
        The pipeline, with steps ``impute``, ``scale`` and ``clf``; it consumes ``[n_clips, n_stats]``.

    Raises:
        SerError: Unknown ``kind`` or a parameter the classifier does not take.
    """
    if kind not in CLASSIFIERS:
        raise SerError(f"unknown classical model {kind!r}: choose one of {', '.join(CLASSICAL_KINDS)}")
    settings = {**CLASSICAL_DEFAULTS[kind], **params}
    if isinstance(settings.get("hidden_layer_sizes"), list):
        settings["hidden_layer_sizes"] = tuple(settings["hidden_layer_sizes"])
    classifier_class = CLASSIFIERS[kind]
    accepted = classifier_class().get_params()
    unknown = sorted(set(settings) - set(accepted))
    if unknown:
        raise SerError(
            f"{kind}: unknown parameter(s) {', '.join(unknown)}; {classifier_class.__name__} takes "
            f"{', '.join(sorted(accepted))}"
        )
    classifier = classifier_class(**settings)
    if kind == "svm":
        classifier = CalibratedClassifierCV(classifier, method="sigmoid", cv=5, ensemble=False)
    return Pipeline(
        [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler()), ("clf", classifier)]
    )


def select_stats(X: Mapping[str, Any] | np.ndarray) -> np.ndarray:
    """``X["stats"]`` of the X dict (an array passes through): what classical models consume.

    Raises:
        SerError: The dict carries no clip statistics.
    """
    if not isinstance(X, Mapping):
        return np.asarray(X)
    if X.get("stats") is None:
        raise SerError(
            'classical models read the clip statistics: X["stats"] is missing (build the "handmade" set)'
        )
    return np.asarray(X["stats"], dtype=np.float64)


class SelectStats(TransformerMixin, BaseEstimator):
    """The first step of a classical model behind the X dict: :func:`select_stats` as a transformer.

    (sklearn's FunctionTransformer would count features on the dict itself and fail.)

    Args:
        logmel_stats: Also summarise ``X["logmel"]`` (see
            :func:`components.models.logmel_stats.summarize`) and append it to the statistics;
            ``X["stats"]`` may then be None.
    """

    def __init__(self, logmel_stats: bool = False):
        self.logmel_stats = logmel_stats

    def fit(self, X: Mapping[str, Any] | np.ndarray, y: Any = None) -> SelectStats:
        """Nothing to learn."""
        return self

    def transform(self, X: Mapping[str, Any] | np.ndarray) -> np.ndarray:
        """``X["stats"]`` as an array, with the log-mel statistics after it when asked for."""
        if not getattr(self, "logmel_stats", False):  # models pickled before the option had none
            return select_stats(X)
        if not isinstance(X, Mapping) or X.get("logmel") is None:
            raise SerError('logmel_stats: the model reads log-mel sequences: X["logmel"] is missing')
        summary = summarize(X["logmel"]).astype(np.float64)
        return summary if X.get("stats") is None else np.hstack([select_stats(X), summary])
