"""A trained model together with its preprocessing: raw audio in, emotion and probabilities out.

:class:`EmotionPredictor` is plain Python (it is what gets pickled); :class:`EmotionPyfunc`
adapts it to MLflow's pyfunc interface so a registered model takes raw audio.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from components.data.audio import prepare_signal, read_audio
from components.data.ravdess import EMOTIONS
from components.errors import SerError
from components.features.sets import extract_sets
from components.serving.silence import MAX_SILENT_SHARE, SILENCE_DBFS, check_not_silent

INPUT_COLUMNS: tuple[str, ...] = ("path", "audio_base64", "waveform", "sampling_rate")
AUDIO_MAGIC: tuple[bytes, ...] = (b"RIFF", b"RF64", b"fLaC")
MAX_AUDIO_DUR = 30.0  # seconds per served clip: RAVDESS clips are 3-6 s; longer audio: `ser predict` windows
MAX_AUDIO_BYTES = 10_000_000  # encoded bytes per served clip: 30 s of 48 kHz 16-bit stereo is 5.8 MB
MODEL_CONFIG: dict[str, Any] = {  # logged with the model, so a server may override each key at load time
    "allow_paths": None,  # None: read in-process, refused by a scoring server (its files are not yours)
    "max_audio_dur": MAX_AUDIO_DUR,
    "max_audio_bytes": MAX_AUDIO_BYTES,
    "silence_dbfs": SILENCE_DBFS,  # validate's silence test, as ``ser predict`` and the web demo apply it
    "max_silent_share": MAX_SILENT_SHARE,
}
SERVING_FLAG = "_MLFLOW_IS_IN_SERVING_ENVIRONMENT"  # set by MLflow's scoring server before it takes requests


@dataclass
class EmotionPredictor:
    """A fitted model and the exact feature extraction it was trained on.

    Attributes:
        model: A fitted estimator of ``components.models`` (takes the X dict).
        stats_sets: Scalar feature sets concatenated into ``X["stats"]``.
        uses_logmel: Whether the model reads ``X["logmel"]``.
        extract: Extraction settings (``components.features.sets.extract_params``).
        info: Free description (model kind, training data version, metrics), shown to users.
    """

    model: Any
    stats_sets: tuple[str, ...]
    uses_logmel: bool
    extract: dict[str, Any]
    info: dict[str, Any]

    @property
    def class_names(self) -> list[str]:
        """Emotion names in the order of the probability columns."""
        return [EMOTIONS[int(code)] for code in self.model.classes_]

    def inputs(self, signals: Sequence[np.ndarray]) -> dict[str, Any]:
        """The model's X dict for prepared (mono, resampled, trimmed) signals."""
        sets = [*self.stats_sets, *(["logmel"] if self.uses_logmel else [])]
        rate = self.extract["sampling_rate"]
        features = [extract_sets(signal, rate, sets, self.extract) for signal in signals]
        stats = (
            np.stack([np.concatenate([f[name] for name in self.stats_sets]) for f in features])
            if self.stats_sets
            else None
        )
        logmel = np.stack([f["logmel"] for f in features]).astype(np.float32) if self.uses_logmel else None
        return {"stats": stats, "logmel": logmel}

    def prepare(self, signal: np.ndarray, rate: int) -> np.ndarray:
        """Resample and trim a raw signal as the training clips were (natural length)."""
        return prepare_signal(signal, rate, None, self.extract["trim_top_db"], self.extract["sampling_rate"])

    def predict_signals(self, signals: Sequence[tuple[np.ndarray, int]]) -> pd.DataFrame:
        """Label, confidence and one probability column per emotion for raw ``(signal, rate)`` pairs."""
        prepared = [self.prepare(signal, rate) for signal, rate in signals]
        proba = self.model.predict_proba(self.inputs(prepared))
        names = self.class_names
        table = pd.DataFrame(proba, columns=[f"prob_{name}" for name in names])
        best = proba.argmax(axis=1)
        table.insert(0, "confidence", proba[np.arange(len(proba)), best])
        table.insert(0, "label", [names[i] for i in best])
        return table


def decode_row(
    row: Mapping[str, Any],
    allow_paths: bool = True,
    max_bytes: int | None = None,
    max_dur: float | None = None,
    silence: tuple[float, float] | None = None,
) -> tuple[np.ndarray, int]:
    """One pyfunc input row → ``(signal, rate)``: a file path, base64 audio bytes, or samples.

    Args:
        row: One input row (see :data:`INPUT_COLUMNS`).
        allow_paths: Whether ``path`` inputs may be read (off on a server open to others).
        max_bytes: Largest encoded audio accepted (base64-decoded bytes or file size); None: any.
        max_dur: Longest audio accepted, in seconds; None: any.
        silence: ``(silence_dbfs, max_silent_share)`` of :func:`components.serving.silence.check_not_silent`;
            None: silent clips are scored too.

    Raises:
        SerError: The row holds none of the inputs, bad base64, unreadable, too large or silent audio.
    """
    name, signal, rate = _decode(row, allow_paths, max_bytes)
    _check_dur(name, signal, rate, max_dur)
    if silence is not None:
        check_not_silent(signal, rate, name, *silence)
    return signal, rate


def _decode(row: Mapping[str, Any], allow_paths: bool, max_bytes: int | None) -> tuple[str, np.ndarray, int]:
    """The row's name in messages, samples and rate (see :func:`decode_row`)."""
    if _present(row.get("audio_base64")):
        raw = row["audio_base64"]
        if not isinstance(raw, str | bytes | bytearray):
            raise SerError(
                f"audio_base64: expected one base64 string per row, got {type(raw).__name__}; send rows "
                '(dataframe_split, dataframe_records or {"inputs": [{"audio_base64": "..."}]})'
            )
        if isinstance(raw, bytes | bytearray) and bytes(raw[:4]) in AUDIO_MAGIC:
            data = bytes(raw)  # MLflow's JSON parsing may already have decoded the base64
        else:
            _check_size("audio_base64", len(raw) * 3 // 4, max_bytes)  # before decoding it
            try:
                data = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError, TypeError) as err:
                raise SerError(f"audio_base64: not valid base64 ({err})") from err
        _check_size("audio_base64", len(data), max_bytes)
        return ("audio_base64", *read_audio(data, name="audio_base64"))
    if _present(row.get("waveform")):
        if not _present(row.get("sampling_rate")):
            raise SerError("waveform: give its sampling_rate too")
        signal = np.asarray(row["waveform"], dtype=np.float32)
        if signal.size == 0 or not np.isfinite(signal).all():
            raise SerError("waveform: empty or holds NaN/infinite samples")
        return "waveform", signal, int(row["sampling_rate"])
    if _present(row.get("path")):
        if not allow_paths:
            raise SerError("path inputs are disabled on this server; send audio_base64")
        path = Path(str(row["path"]))
        if path.is_file():
            _check_size(str(path), path.stat().st_size, max_bytes)
        return (str(path), *read_audio(path))
    raise SerError(f"each input row needs one of: {', '.join(INPUT_COLUMNS[:3])}")


def _check_size(name: str, n_bytes: int, max_bytes: int | None) -> None:
    if max_bytes is not None and n_bytes > max_bytes:
        raise SerError(
            f"{name}: {n_bytes / 1e6:.1f} MB of audio is over the limit of {max_bytes / 1e6:g} MB per clip"
        )


def _check_dur(name: str, signal: np.ndarray, rate: int, max_dur: float | None) -> None:
    if rate <= 0:
        raise SerError(f"{name}: sampling rate {rate} Hz is not positive")
    dur = len(signal) / rate
    if max_dur is not None and dur > max_dur:
        raise SerError(
            f"{name}: {dur:.1f} s of audio is over the limit of {max_dur:g} s per clip; "
            "send shorter clips (`ser predict` scores long recordings in windows)"
        )


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and np.isnan(value):
        return False
    return not (isinstance(value, str) and not value)


class EmotionPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc adapter: a DataFrame of audio inputs → a DataFrame of predictions.

    ``model_config`` (given to ``mlflow.pyfunc.load_model``, or as the JSON environment
    variable ``SERVING_MODEL_CONFIG`` to ``mlflow models serve``; MLflow applies only keys the
    model was logged with, see :data:`MODEL_CONFIG`) may set ``allow_paths`` (default: paths
    are read in-process and refused by a scoring server), ``max_audio_dur`` (seconds, default
    :data:`MAX_AUDIO_DUR`), ``max_audio_bytes`` (default :data:`MAX_AUDIO_BYTES`), and
    ``silence_dbfs`` and ``max_silent_share`` (validate's silence test: a silent row is refused
    with HTTP 400); null lifts a limit.
    """

    # the defaults of a model logged before a key existed (MLflow passes only the logged keys)
    silence_dbfs: float | None = SILENCE_DBFS
    max_silent_share: float | None = MAX_SILENT_SHARE

    def load_context(self, context: Any) -> None:
        """Load the pickled predictor from the model's own artifacts (nothing else is unpickled)."""
        import joblib

        config = context.model_config or {}
        self.predictor: EmotionPredictor = joblib.load(context.artifacts["predictor"])
        self.allow_paths: bool | None = config.get("allow_paths")
        self.max_audio_dur = config.get("max_audio_dur", MAX_AUDIO_DUR)
        self.max_audio_bytes = config.get("max_audio_bytes", MAX_AUDIO_BYTES)
        self.silence_dbfs = config.get("silence_dbfs", SILENCE_DBFS)
        self.max_silent_share = config.get("max_silent_share", MAX_SILENT_SHARE)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """Predict each row; see :func:`decode_row` for the accepted columns.

        Raises:
            MlflowException: A row the model cannot read (``INVALID_PARAMETER_VALUE``: the
                scoring server answers HTTP 400 with the message).
        """
        from mlflow.exceptions import MlflowException

        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        allow_paths = self.allow_paths
        if allow_paths is None:
            allow_paths = os.environ.get(SERVING_FLAG, "").lower() not in ("true", "1")
        silence = None  # null in model_config lifts the silence test
        if self.silence_dbfs is not None and self.max_silent_share is not None:
            silence = (float(self.silence_dbfs), float(self.max_silent_share))
        limits = (self.max_audio_bytes, self.max_audio_dur, silence)
        signals = []
        for i, row in enumerate(model_input.to_dict("records")):
            try:
                signals.append(decode_row(row, allow_paths, *limits))
            except SerError as err:
                raise MlflowException.invalid_parameter_value(f"input row {i}: {err}") from err
        if not signals:
            raise MlflowException.invalid_parameter_value(
                f"no input rows: send at least one row with one of {', '.join(INPUT_COLUMNS[:3])}"
            )
        return self.predictor.predict_signals(signals)
