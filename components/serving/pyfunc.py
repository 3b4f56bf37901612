"""A trained model together with its preprocessing: raw audio in, emotion and probabilities out.

:class:`EmotionPredictor` is plain Python (it is what gets pickled); :class:`EmotionPyfunc`
adapts it to MLflow's pyfunc interface so a registered model takes raw audio.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from components.data.audio import prepare_signal, probe_audio, read_audio, regular_file
from components.data.clip_checks import ClipLimits, check_header
from components.data.ravdess import EMOTIONS
from components.errors import SerError
from components.features.sets import extract_sets
from components.serving.adaptation import SPEAKER_GROUP, predict_adapted, probability_table, recorded_stats
from components.serving.checks import check_clip

INPUT_COLUMNS: tuple[str, ...] = ("path", "audio_base64", "waveform", "sampling_rate")
AUDIO_MAGIC: tuple[bytes, ...] = (b"RIFF", b"RF64", b"fLaC")
MAX_AUDIO_DUR = 30.0  # seconds per served clip: RAVDESS clips are 3-6 s; longer audio: `ser predict` windows
MAX_AUDIO_BYTES = 10_000_000  # encoded bytes per served clip: 30 s of 48 kHz 16-bit stereo is 5.8 MB
MODEL_CONFIG: dict[str, Any] = {  # logged with the model, so a server may override each key at load time
    "allow_paths": False,  # a server's files are not its clients': model_io.load_model turns it on in-process
    "max_audio_dur": MAX_AUDIO_DUR,
    "max_audio_bytes": MAX_AUDIO_BYTES,
    # validate's per-clip checks (rate, duration, silence, DC, clipping), as `ser predict` and the
    # web demo apply them; a model logs the limits it was trained with over these defaults
    **{key: value for key, value in ClipLimits().as_dict().items() if key != "max_audio_dur"},
    "speaker_min_clips": None,  # speaker adaptation: None = the minimum recorded with the model
}


@dataclass
class EmotionPredictor:
    """A fitted model and the exact feature extraction it was trained on.

    Attributes:
        model: A fitted estimator of ``components.models`` (takes the X dict).
        stats_sets: Scalar feature sets concatenated into ``X["stats"]``.
        uses_logmel: Whether the model reads ``X["logmel"]``, the sequence set ``sequence``.
        extract: Extraction settings (``components.features.sets.extract_params``).
        info: Free description (model kind, training data version, metrics), shown to users.
        sequence: The sequence set computed into ``X["logmel"]``: ``logmel`` (models pickled
            before the setting existed read it) or ``whisper_tiny_en_frames``.
    """

    model: Any
    stats_sets: tuple[str, ...]
    uses_logmel: bool
    extract: dict[str, Any]
    info: dict[str, Any]
    sequence: str = "logmel"

    @property
    def class_names(self) -> list[str]:
        """Emotion names in the order of the probability columns."""
        return [EMOTIONS[int(code)] for code in self.model.classes_]

    def inputs(self, signals: Sequence[np.ndarray]) -> dict[str, Any]:
        """The model's X dict for prepared (mono, resampled, trimmed) signals."""
        sets = [*self.stats_sets, *([self.sequence] if self.uses_logmel else [])]
        rate = self.extract["sampling_rate"]
        features = [extract_sets(signal, rate, sets, self.extract) for signal in signals]
        stats = (
            np.stack([np.concatenate([f[name] for name in self.stats_sets]) for f in features])
            if self.stats_sets
            else None
        )
        logmel = (
            np.stack([f[self.sequence] for f in features]).astype(np.float32) if self.uses_logmel else None
        )
        return {"stats": stats, "logmel": logmel}

    def prepare(self, signal: np.ndarray, rate: int) -> np.ndarray:
        """Resample and trim a raw signal as the training clips were (natural length)."""
        return prepare_signal(signal, rate, None, self.extract["trim_top_db"], self.extract["sampling_rate"])

    def predict_signals(self, signals: Sequence[tuple[np.ndarray, int]]) -> pd.DataFrame:
        """Label, confidence and one probability column per emotion for raw ``(signal, rate)`` pairs."""
        prepared = [self.prepare(signal, rate) for signal, rate in signals]
        return probability_table(self, self.model.predict_proba(self.inputs(prepared)))


def decode_row(
    row: Mapping[str, Any],
    allow_paths: bool = True,
    max_bytes: int | None = None,
    max_dur: float | None = None,
    checks: ClipLimits | None = None,
) -> tuple[np.ndarray, int]:
    """One pyfunc input row → ``(signal, rate)``: a file path, base64 audio bytes, or samples.

    Args:
        row: One input row (see :data:`INPUT_COLUMNS`).
        allow_paths: Whether ``path`` inputs may be read (off on a server open to others).
        max_bytes: Largest encoded audio accepted (base64-decoded bytes or file size); None: any.
        max_dur: Longest audio accepted, in seconds; None: any.
        checks: validate's per-clip checks (:func:`components.serving.checks.check_clip`; its
            ``max_audio_dur`` aside: ``max_dur`` is the limit here); None: every readable clip is scored.
            Rate and duration are checked from the header, before the audio is decoded.

    Raises:
        SerError: The row holds none of the inputs, bad base64, unreadable or too large audio, or
            audio that fails a check (rate, duration, silence, DC, clipping).
    """
    checks = checks.without_max_dur() if checks is not None else None
    name, signal, rate = _decode(
        row, allow_paths, max_bytes, lambda *header: _check_header(*header, max_dur, checks)
    )
    _check_header(name, rate, len(signal), max_dur, checks)  # what was decoded, not what the header said
    if checks is not None:
        check_clip(signal, rate, name, checks)
    return signal, rate


def _decode(
    row: Mapping[str, Any], allow_paths: bool, max_bytes: int | None, check: Callable[[str, int, int], None]
) -> tuple[str, np.ndarray, int]:
    """The row's name in messages, samples and rate (see :func:`decode_row`).

    ``check(name, sampling_rate, n_frames)`` sees each input's rate and length before it is decoded.
    """
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
        info = probe_audio(data, "audio_base64")
        check("audio_base64", info.sampling_rate, info.n_frames)
        return ("audio_base64", *read_audio(data, name="audio_base64"))
    if _present(row.get("waveform")):
        if not _present(row.get("sampling_rate")):
            raise SerError("waveform: give its sampling_rate too")
        try:
            rate = int(row["sampling_rate"])
        except (TypeError, ValueError, OverflowError) as err:
            raise SerError(
                f"waveform: sampling_rate {row['sampling_rate']!r} is not a whole number of Hz"
            ) from err
        check("waveform", rate, len(row["waveform"]))
        signal = np.asarray(row["waveform"], dtype=np.float32)
        if signal.size == 0 or not np.isfinite(signal).all():
            raise SerError("waveform: empty or holds NaN/infinite samples")
        return "waveform", signal, rate
    if _present(row.get("path")):
        if not allow_paths:
            raise SerError("path inputs are disabled on this server; send audio_base64")
        path = regular_file(str(row["path"]))  # a device or FIFO would be read for ever
        _check_size(str(path), path.stat().st_size, max_bytes)
        info = probe_audio(path)
        check(str(path), info.sampling_rate, info.n_frames)
        return (str(path), *read_audio(path))
    raise SerError(f"each input row needs one of: {', '.join(INPUT_COLUMNS[:3])}")


def _check_size(name: str, n_bytes: int, max_bytes: int | None) -> None:
    if max_bytes is not None and n_bytes > max_bytes:
        raise SerError(
            f"{name}: {n_bytes / 1e6:.1f} MB of audio is over the limit of {max_bytes / 1e6:g} MB per clip"
        )


def _check_header(
    name: str, rate: int, n_frames: int, max_dur: float | None, checks: ClipLimits | None
) -> None:
    if rate <= 0:
        raise SerError(f"{name}: sampling rate {rate} Hz is not positive")
    if checks is not None:  # the rate first: at 1 Hz, 3 s of audio reads as 13 hours
        check_header(name, rate, n_frames, checks)
    dur = n_frames / rate
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
    model was logged with, see :data:`MODEL_CONFIG`) may set ``allow_paths`` (default false, and
    null is false: only a loader that reads its own files turns it on), ``max_audio_dur`` (seconds, default
    :data:`MAX_AUDIO_DUR`), ``max_audio_bytes`` (default :data:`MAX_AUDIO_BYTES`), and
    and validate's per-clip checks (``min_audio_dur``, ``min_sampling_rate``, ``max_sampling_rate``,
    ``max_clipped_share``, ``silence_dbfs``, ``max_silent_share``: a row that fails one is refused
    with HTTP 400); null lifts a limit.

    An optional ``speaker`` column turns on speaker adaptation: the rows of a request that share
    a speaker are re-centred on the training mean when there are at least ``speaker_min_clips``
    of them (default: the minimum recorded with the model), and an ``adaptation`` column says
    what each row got. A model published without training statistics refuses it (HTTP 400).
    """

    # the defaults of a model logged before a key existed (MLflow passes only the logged keys)
    allow_paths: bool = False
    checks: ClipLimits | None = ClipLimits()
    speaker_min_clips: int | None = None

    def load_context(self, context: Any) -> None:
        """Load the pickled predictor from the model's own artifacts (nothing else is unpickled)."""
        import joblib

        config = context.model_config or {}
        self.predictor: EmotionPredictor = joblib.load(context.artifacts["predictor"])
        self.allow_paths = bool(config.get("allow_paths"))  # null: a model logged before it was false
        self.max_audio_dur = config.get("max_audio_dur", MAX_AUDIO_DUR)
        self.max_audio_bytes = config.get("max_audio_bytes", MAX_AUDIO_BYTES)
        self.checks = ClipLimits.from_mapping(config)  # keys a model was logged without keep the defaults
        self.speaker_min_clips = config.get("speaker_min_clips")

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """Predict each row; see :func:`decode_row` for the accepted columns.

        Raises:
            MlflowException: A row the model cannot read (``INVALID_PARAMETER_VALUE``: the
                scoring server answers HTTP 400 with the message).
        """
        from mlflow.exceptions import MlflowException

        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        allow_paths = bool(self.allow_paths)
        limits = (self.max_audio_bytes, self.max_audio_dur, self.checks)
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
        if SPEAKER_GROUP in model_input.columns and model_input[SPEAKER_GROUP].notna().any():
            return self._predict_by_speaker(signals, model_input[SPEAKER_GROUP].tolist())
        return self.predictor.predict_signals(signals)

    def _predict_by_speaker(self, signals: list[tuple[np.ndarray, int]], speakers: list[Any]) -> pd.DataFrame:
        """Rows sharing a ``speaker`` re-centred on the training mean (components/serving/adaptation.py)."""
        from mlflow.exceptions import MlflowException

        try:
            stats = recorded_stats(self.predictor, "this model")
            min_clips = self.speaker_min_clips if self.speaker_min_clips is not None else stats["min_clips"]
            return predict_adapted(self.predictor, signals, speakers, int(min_clips))
        except SerError as err:
            raise MlflowException.invalid_parameter_value(str(err)) from err
