"""A trained model together with its preprocessing: raw audio in, emotion and probabilities out.

:class:`EmotionPredictor` is plain Python (it is what gets pickled); :class:`EmotionPyfunc`
adapts it to MLflow's pyfunc interface so a registered model takes raw audio.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from components.audio import prepare_signal, read_audio
from components.errors import SerError
from components.features.sets import extract_sets
from components.ravdess import EMOTIONS

INPUT_COLUMNS: tuple[str, ...] = ("path", "audio_base64", "waveform", "sampling_rate")
AUDIO_MAGIC: tuple[bytes, ...] = (b"RIFF", b"RF64", b"fLaC")


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


def decode_row(row: Mapping[str, Any], allow_paths: bool = True) -> tuple[np.ndarray, int]:
    """One pyfunc input row → ``(signal, rate)``: a file path, base64 audio bytes, or samples.

    Raises:
        SerError: The row holds none of the inputs, bad base64, or unreadable audio.
    """
    if _present(row.get("audio_base64")):
        raw = row["audio_base64"]
        if isinstance(raw, bytes | bytearray) and bytes(raw[:4]) in AUDIO_MAGIC:
            data = bytes(raw)  # MLflow's JSON parsing may already have decoded the base64
        else:
            try:
                data = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError, TypeError) as err:
                raise SerError(f"audio_base64: not valid base64 ({err})") from err
        return read_audio(data, name="audio_base64")
    if _present(row.get("waveform")):
        if not _present(row.get("sampling_rate")):
            raise SerError("waveform: give its sampling_rate too")
        signal = np.asarray(row["waveform"], dtype=np.float32)
        if signal.size == 0 or not np.isfinite(signal).all():
            raise SerError("waveform: empty or holds NaN/infinite samples")
        return signal, int(row["sampling_rate"])
    if _present(row.get("path")):
        if not allow_paths:
            raise SerError("path inputs are disabled on this server; send audio_base64")
        return read_audio(Path(str(row["path"])))
    raise SerError(f"each input row needs one of: {', '.join(INPUT_COLUMNS[:3])}")


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and np.isnan(value):
        return False
    return not (isinstance(value, str) and not value)


class EmotionPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc adapter: a DataFrame of audio inputs → a DataFrame of predictions."""

    def load_context(self, context: Any) -> None:
        """Load the pickled predictor from the model's own artifacts (nothing else is unpickled)."""
        import joblib

        self.predictor: EmotionPredictor = joblib.load(context.artifacts["predictor"])
        self.allow_paths = bool((context.model_config or {}).get("allow_paths", True))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """Predict each row; see :func:`decode_row` for the accepted columns."""
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        signals = [decode_row(row, self.allow_paths) for row in model_input.to_dict("records")]
        return self.predictor.predict_signals(signals)
