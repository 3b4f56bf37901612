"""A sklearn-style classifier around the shared torch loop: standardisation, label coding, pickling.

``X`` is a dict ``{"logmel": [n_clips, n_mels, n_frames], "stats": [n_clips, n_stats] or None}``
(see :mod:`components.models`). The fitted object pickles to plain data plus a CPU state_dict,
so it loads on a machine with neither the training data nor a GPU.
"""

from __future__ import annotations

import contextlib
import inspect
import io
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from torch import nn

from components.errors import SerError
from components.models.nets import build_net
from components.models.training import Log, SpecAugment, TensorData, predict_logits, train_torch

TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 30,
    "batch_size": 32,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "patience": 6,  # epochs without a better validation recall before stopping
    "lr_patience": 3,  # epochs without a lower validation loss before the LR is cut
    "lr_factor": 0.5,
    "seed": 0,
    "device": "cpu",
    "class_weighted": True,  # RAVDESS holds half as many neutral clips as of any other emotion
    "monitor": "recall",
    "max_grad_norm": 5.0,
    "mixup": 0.0,  # Beta(α, α) of mixup; 0 = off
    "augment": None,  # None = off; True or {"freq_mask": 8, "time_mask": 20, "n_masks": 1} = SpecAugment
    "val_share": 0.1,  # carved out of the training clips, stratified, when fit gets no validation set
    "n_threads": None,  # torch CPU threads while fitting; None = leave torch's setting
}
CHUNK = 256  # clips per step when computing moments, to keep float64 temporaries small


def unpack(X: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """``(logmel, stats)`` from the X dict, checked for shape."""
    if not isinstance(X, Mapping) or "logmel" not in X:
        raise SerError(
            'deep models take X = {"logmel": [n, n_mels, n_frames], "stats": [n, n_stats] or None}'
        )
    logmel, stats = np.asarray(X["logmel"]), X.get("stats")
    if logmel.ndim != 3:
        raise SerError(f'X["logmel"] must be [n_clips, n_mels, n_frames], got shape {logmel.shape}')
    if stats is not None:
        stats = np.asarray(stats, dtype=np.float32)
        if stats.ndim != 2 or len(stats) != len(logmel):
            raise SerError(f'X["stats"] must be [{len(logmel)}, n_stats], got shape {stats.shape}')
    return logmel, stats


def logmel_moments(logmel: np.ndarray, skip_padding: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-mel-bin mean and std over clips and frames, as float32 ``[n_mels]`` arrays.

    ``skip_padding``: over the frames that are not all zero only (the padding of a masked net).
    """
    total, squares = np.zeros(logmel.shape[1]), np.zeros(logmel.shape[1])
    count = 0
    for start in range(0, len(logmel), CHUNK):
        part = logmel[start : start + CHUNK].astype(np.float64)
        total += part.sum(axis=(0, 2))  # padding frames add zeros
        squares += np.square(part).sum(axis=(0, 2))
        count += int(part.any(axis=1).sum()) if skip_padding else part.shape[0] * part.shape[2]
    count = max(count, 1)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return mean.astype(np.float32), np.where(std > 1e-6, std, 1.0).astype(np.float32)


def carve(logmel: np.ndarray, stats: np.ndarray | None, y: np.ndarray, share: float, seed: int) -> tuple:
    """``(train, val)`` triples ``(logmel, stats, y)``; stratified unless a class is too rare to split."""
    index = np.arange(len(y))
    try:
        train_idx, val_idx = train_test_split(index, test_size=share, stratify=y, random_state=seed)
    except ValueError:
        train_idx, val_idx = train_test_split(index, test_size=share, random_state=seed)
    return tuple((logmel[i], None if stats is None else stats[i], y[i]) for i in (train_idx, val_idx))


def make_augment(augment: bool | Mapping[str, int] | None) -> SpecAugment | None:
    """The ``augment`` train setting as a hook: None/false = off, true = defaults, a dict = arguments."""
    if augment is None or augment is False:
        return None
    if augment is True or isinstance(augment, Mapping):
        return SpecAugment(**({} if augment is True else augment))
    raise SerError(f"augment must be null, true or a dict of SpecAugment arguments, got {augment!r}")


@contextlib.contextmanager
def torch_threads(n_threads: int | None) -> Iterator[None]:
    """Run the block with ``n_threads`` torch CPU threads, then restore the previous setting."""
    previous = torch.get_num_threads()
    if n_threads:
        torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class TorchClassifier(ClassifierMixin, BaseEstimator):
    """A deep model as a sklearn classifier: ``fit``, ``predict_proba``, ``predict``, ``classes_``.

    Args:
        arch: ``"cnn"``, ``"cnn_lstm"`` or ``"cnn_gru"``.
        arch_params: Net constructor arguments, e.g. ``{"n_filters": 64}``
            (see :func:`components.models.nets.arch_param_names`).
        train_params: Overrides of :data:`TRAIN_DEFAULTS` (the arguments of
            :func:`components.models.training.train_torch` plus ``augment``, ``val_share`` and ``n_threads``).
    """

    def __init__(self, arch: str = "cnn", arch_params: dict | None = None, train_params: dict | None = None):
        self.arch = arch
        self.arch_params = arch_params
        self.train_params = train_params

    def fit(
        self,
        X: Mapping[str, Any],
        y: Any,
        X_val: Mapping | None = None,
        y_val: Any = None,
        log: Log | None = None,
    ) -> TorchClassifier:
        """Standardise, train with early stopping on the validation clips, keep the best weights.

        Args:
            X: ``{"logmel": [n, n_mels, n_frames], "stats": [n, n_stats] or None}``.
            y: ``n`` labels of any sortable type (e.g. emotion names).
            X_val: Validation clips in the same form (normally the validation actors' clips);
                None = a stratified ``val_share`` of ``X``.
            y_val: Their labels; every one must occur in ``y``.
            log: Called after each epoch with ``(epoch, metrics)``.

        Returns:
            self, with ``classes_``, ``module_`` (on CPU, eval mode) and ``train_result_``.
        """
        settings = {**TRAIN_DEFAULTS, **(self.train_params or {})}
        unknown = sorted(set(settings) - set(TRAIN_DEFAULTS))
        if unknown:
            raise SerError(
                f"unknown train parameter(s) {', '.join(unknown)}; known: {', '.join(TRAIN_DEFAULTS)}"
            )
        logmel, stats = unpack(X)
        y = np.asarray(y)
        if len(y) != len(logmel):
            raise SerError(f"X holds {len(logmel)} clips but y {len(y)} labels")
        if X_val is None:
            (logmel, stats, y), (val_logmel, val_stats, y_val) = carve(
                logmel, stats, y, settings["val_share"], settings["seed"]
            )
        else:
            val_logmel, val_stats = unpack(X_val)
            if y_val is None or len(y_val) != len(val_logmel):
                raise SerError(f"X_val holds {len(val_logmel)} clips: pass as many labels in y_val")
            y_val = np.asarray(y_val)
        self.classes_ = np.unique(y)
        if not np.isin(y_val, self.classes_).all():
            raise SerError(
                f"validation labels {sorted(set(y_val) - set(self.classes_))} never occur in training"
            )
        self._fit_scalers(logmel, stats)
        train, val = self._tensors(logmel, stats, y), self._tensors(val_logmel, val_stats, y_val)
        loop_args = {k: settings[k] for k in inspect.signature(train_torch).parameters if k in settings}
        loop_args["augment"] = make_augment(settings["augment"])
        with torch_threads(settings["n_threads"]):
            torch.manual_seed(settings["seed"])  # weight initialisation
            self.module_ = self._build()
            self.train_result_ = train_torch(self.module_, train, val, **loop_args, log=log)
        self.module_.cpu().eval()
        return self

    def predict_proba(self, X: Mapping[str, Any]) -> np.ndarray:
        """Class probabilities ``[n, n_classes]`` (columns in ``classes_`` order; rows sum to 1)."""
        if not hasattr(self, "module_"):
            raise SerError("this TorchClassifier is not fitted yet: call fit first")
        logmel, stats = unpack(X)
        logits = predict_logits(self.module_, self._tensors(logmel, stats, None)).double()
        return torch.softmax(logits, dim=1).numpy()

    def predict(self, X: Mapping[str, Any]) -> np.ndarray:
        """The most probable label of each clip."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    @property
    def _masked(self) -> bool:
        return bool((self.arch_params or {}).get("masked", False))

    def _build(self) -> nn.Module:
        """A freshly initialised net for the fitted data's shapes."""
        return build_net(self.arch, self.n_mels_, self.n_stats_, len(self.classes_), self.arch_params or {})

    def _fit_scalers(self, logmel: np.ndarray, stats: np.ndarray | None) -> None:
        """Per-mel-bin log-mel moments and per-column stats moments of the training clips."""
        self.n_mels_, self.n_stats_ = logmel.shape[1], 0 if stats is None else stats.shape[1]
        self.logmel_mean_, self.logmel_std_ = logmel_moments(logmel, self._masked)
        self.stats_mean_ = self.stats_std_ = None
        if stats is not None:
            self.stats_mean_ = np.nan_to_num(np.nanmean(stats, axis=0)).astype(np.float32)
            std = np.nan_to_num(np.nanstd(stats, axis=0))
            self.stats_std_ = np.where(std > 1e-6, std, 1.0).astype(np.float32)

    def _tensors(self, logmel: np.ndarray, stats: np.ndarray | None, y: np.ndarray | None) -> TensorData:
        """Standardised float32 tensors, with labels coded as indices into ``classes_``."""
        if logmel.shape[1] != self.n_mels_:
            raise SerError(f"the model was trained on {self.n_mels_} mel bins, X has {logmel.shape[1]}")
        if (stats is None) != (self.n_stats_ == 0) or (stats is not None and stats.shape[1] != self.n_stats_):
            got = "none" if stats is None else stats.shape[1]
            raise SerError(
                f'the model was trained with {self.n_stats_} clip statistics, X["stats"] has {got}'
            )
        scaled = logmel.astype(np.float32)  # always a copy: the caller's array is left alone
        scaled -= self.logmel_mean_[None, :, None]
        scaled /= self.logmel_std_[None, :, None]
        if self._masked:  # padding (all-zero frames) stays zero: the net leaves it out
            scaled *= logmel.any(axis=1, keepdims=True)
        if stats is not None:
            stats = np.nan_to_num((stats - self.stats_mean_) / self.stats_std_).astype(np.float32)
            stats = torch.from_numpy(stats)
        codes = (
            torch.zeros(len(logmel), dtype=torch.long)
            if y is None
            else torch.from_numpy(np.searchsorted(self.classes_, y).astype(np.int64))
        )
        return TensorData(torch.from_numpy(scaled), stats, codes)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # a copy: object.__getstate__ returns __dict__ itself
        module = state.pop("module_", None)
        if module is not None:
            buffer = io.BytesIO()
            torch.save({key: value.detach().cpu() for key, value in module.state_dict().items()}, buffer)
            state["module_state_"] = buffer.getvalue()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        blob = state.pop("module_state_", None)
        super().__setstate__(state)
        if blob is not None:
            self.module_ = self._build()
            weights = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
            self.module_.load_state_dict(weights)
            self.module_.eval()
