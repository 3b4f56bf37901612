"""Soft voting over other models of the comparison: the mean of their class probabilities.

Members are models like any other (a kind, the scalar feature sets they read, their settings),
written inline in the ensemble's params section. The ensemble reads the union of their
inputs: ``X["stats"]`` is the ensemble's feature sets side by side, and each member gets the
columns of its own sets. The column layout comes once, at fit time, from
``X["stats_layout"]`` (``((set_name, n_columns), ...)``, which
:meth:`components.evaluation.dataset.Dataset.inputs` adds); the fitted ensemble keeps it, so prediction
needs only ``stats`` and ``logmel``, as the serving code builds them.

Weights are fixed in params (equal by default), never fitted on test clips. Deep members stop
early on the validation clips; classical members, which have no early stopping, train on the
training and validation clips together, as they do alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from components.errors import SerError
from components.models.training import Log

MEMBER_KEYS = ("kind", "features", "sequence")  # a member's section: these plus its model settings


def member_reads_logmel(section: Mapping[str, Any], deep_kinds: Sequence[str]) -> bool:
    """Whether a member section reads the log-mel sequences (a deep kind, or ``logmel_stats``)."""
    return section.get("kind") in deep_kinds or bool(section.get("logmel_stats", False))


class SoftVote(ClassifierMixin, BaseEstimator):
    """Mean class probabilities of member models, weighted.

    Args:
        members: ``{name: {"kind": ..., "features": [...], **settings}}``; ``features`` lists
            scalar sets only (deep members read ``logmel`` whatever it says).
        weights: ``{name: weight}``; None or a missing name = 1. Weights need not sum to 1.
        build: ``(kind, settings) -> estimator`` (``components.models.build_model``).
        deep_kinds: Kinds that early-stop on validation clips.
    """

    def __init__(
        self,
        members: Mapping[str, Mapping[str, Any]] | None = None,
        weights: Mapping[str, float] | None = None,
        build: Callable[[str, Mapping[str, Any]], Any] | None = None,
        deep_kinds: Sequence[str] = (),
    ):
        self.members = members
        self.weights = weights
        self.build = build
        self.deep_kinds = deep_kinds

    def fit(
        self,
        X: Mapping[str, Any],
        y: Any,
        X_val: Mapping[str, Any] | None = None,
        y_val: Any = None,
        log: Log | None = None,
    ) -> SoftVote:
        """Fit every member on its own columns; deep ones stop early on ``X_val``.

        Returns:
            self, with ``classes_``, ``members_`` (fitted, by name) and ``layout_``.

        Raises:
            SerError: No members, an unknown weight name, or a layout that does not fit ``X``.
        """
        if not self.members:
            raise SerError("ensemble: list at least one member under `members` in its params section")
        unknown = sorted(set(self.weights or {}) - set(self.members))
        if unknown:
            raise SerError(f"ensemble: weights name unknown member(s) {', '.join(unknown)}")
        self.layout_ = self._layout(X)
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        self.members_ = {}
        for name, section in self.members.items():
            kind = section.get("kind", name)
            settings = {k: v for k, v in section.items() if k not in MEMBER_KEYS}
            model = self.build(kind, settings)
            if kind in self.deep_kinds:
                has_val = X_val is not None and y_val is not None and len(y_val)
                val = self._member_inputs(name, X_val) if has_val else None
                model.fit(self._member_inputs(name, X), y, val, y_val if has_val else None, log=log)
            elif X_val is not None and y_val is not None and len(y_val):
                both = {key: _stack(X.get(key), X_val.get(key)) for key in ("stats", "logmel")}
                model.fit(self._member_inputs(name, both), np.concatenate([y, np.asarray(y_val)]))
            else:
                model.fit(self._member_inputs(name, X), y)
            if not np.array_equal(model.classes_, self.classes_):
                raise SerError(f"ensemble member {name} learnt classes {model.classes_}, not {self.classes_}")
            self.members_[name] = model
        return self

    def predict_proba(self, X: Mapping[str, Any]) -> np.ndarray:
        """Weighted mean of the members' probabilities ``[n, n_classes]`` (rows sum to 1)."""
        if not hasattr(self, "members_"):
            raise SerError("this ensemble is not fitted yet: call fit first")
        weights = self.weights or {}
        total, mixed = 0.0, None
        for name, model in self.members_.items():
            weight = float(weights.get(name, 1.0))
            proba = weight * model.predict_proba(self._member_inputs(name, X))
            mixed = proba if mixed is None else mixed + proba
            total += weight
        return mixed / total

    def predict(self, X: Mapping[str, Any]) -> np.ndarray:
        """The most probable label of each clip."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def _layout(self, X: Mapping[str, Any]) -> tuple[tuple[str, int], ...]:
        """The ``(set, n_columns)`` order of ``X["stats"]``, checked against the members' sets."""
        stats = X.get("stats")
        layout = tuple((str(name), int(width)) for name, width in X.get("stats_layout") or ())
        wanted = {name for section in self.members.values() for name in section.get("features", [])}
        if not wanted:
            return layout
        if not layout:
            raise SerError(
                'ensemble: X["stats_layout"] must say which columns of X["stats"] belong to which '
                "feature set (components.evaluation.dataset.Dataset.inputs adds it)"
            )
        if stats is None or sum(width for _, width in layout) != np.shape(stats)[1]:
            raise SerError(f'ensemble: X["stats"] does not match its layout {layout}')
        missing = sorted(wanted - {name for name, _ in layout})
        if missing:
            raise SerError(f"ensemble: members read set(s) {', '.join(missing)}: add them to its features")
        return layout

    def _member_inputs(self, name: str, X: Mapping[str, Any]) -> dict[str, Any]:
        """The X dict one member reads: its sets' columns of ``stats``, and ``logmel``."""
        section = self.members[name]
        sets = list(section.get("features", []))
        stats = None
        if sets:
            starts = np.cumsum([0, *(width for _, width in self.layout_)])
            position = {set_name: i for i, (set_name, _) in enumerate(self.layout_)}
            columns = np.concatenate([np.arange(starts[position[s]], starts[position[s] + 1]) for s in sets])
            stats = np.asarray(X["stats"])[:, columns]
        reads_logmel = member_reads_logmel(section, self.deep_kinds)
        return {"stats": stats, "logmel": X.get("logmel") if reads_logmel else None}


def _stack(first: Any, second: Any) -> Any:
    return None if first is None or second is None else np.concatenate([first, second])
