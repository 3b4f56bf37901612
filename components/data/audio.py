"""Reading audio files into mono 16 kHz float32 signals of a fixed length."""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from components.errors import SerError

SAMPLING_RATE = 16_000  # what every model in the pipeline consumes (wav2vec2's rate)


def read_audio(source: str | Path | bytes | BinaryIO, name: str | None = None) -> tuple[np.ndarray, int]:
    """Read any file soundfile understands (WAV/FLAC, 8–32-bit int or float).

    Args:
        source: A path, the file's bytes, or an open binary file.
        name: What to call the file in error messages (defaults to the path).

    Returns:
        ``(signal, sampling_rate)`` with ``signal`` float32 of shape ``(n_samples, n_channels)``.

    Raises:
        SerError: The file is missing, empty, not audio, truncated, or holds NaN/Inf samples.
    """
    label = name or (str(source) if isinstance(source, (str, Path)) else "<audio bytes>")
    # libsndfile calls an empty file "Format not recognised"; say what is wrong instead
    empty = source == b"" if isinstance(source, bytes) else _is_empty_file(source)
    if empty:
        raise SerError(f"{label}: the file is empty (zero length, 0 bytes)")
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        signal, sampling_rate = sf.read(source, dtype="float32", always_2d=True)
    except FileNotFoundError as err:
        raise SerError(f"{label}: file not found") from err
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        detail = getattr(err, "error_string", None) or str(err)
        raise SerError(f"{label}: not a readable WAV/FLAC file ({detail})") from err
    if signal.shape[0] == 0:
        raise SerError(f"{label}: the file holds no samples (zero length)")
    if not np.isfinite(signal).all():
        raise SerError(f"{label}: the file holds NaN or infinite samples")
    return signal, int(sampling_rate)


def _is_empty_file(source: str | Path | BinaryIO) -> bool:
    if not isinstance(source, (str, Path)):
        return False
    try:
        return Path(source).stat().st_size == 0
    except OSError:
        return False  # missing or unreadable: sf.read says which


def to_mono(signal: np.ndarray) -> np.ndarray:
    """Average the channels of a ``(n_samples, n_channels)`` signal into one."""
    if signal.ndim == 1:
        return signal
    return signal.mean(axis=1, dtype=np.float32) if signal.shape[1] > 1 else signal[:, 0]


def resample(signal: np.ndarray, sampling_rate: int, target_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Resample a mono signal with soxr (high quality); a no-op at the target rate."""
    if sampling_rate == target_rate:
        return signal.astype(np.float32, copy=False)
    return soxr.resample(signal, sampling_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def trim_silence(
    signal: np.ndarray, sampling_rate: int, top_db: float, frame_dur: float = 0.025, margin_dur: float = 0.05
) -> np.ndarray:
    """Cut leading and trailing frames quieter than ``top_db`` below the loudest frame.

    Args:
        signal: Mono signal.
        sampling_rate: Its rate in Hz.
        top_db: Frames whose RMS is more than this many dB below the peak frame are silence.
        frame_dur: Analysis frame length in seconds (non-overlapping frames).
        margin_dur: Seconds of context kept on each side of the voiced region.

    Returns:
        The trimmed signal; an all-silent signal is returned unchanged.
    """
    frame = max(1, int(frame_dur * sampling_rate))
    n_frames = len(signal) // frame
    if n_frames < 2:
        return signal
    frames = signal[: n_frames * frame].reshape(n_frames, frame).astype(np.float64)
    rms = np.sqrt((frames**2).mean(axis=1))
    peak = rms.max()
    if peak <= 0:
        return signal
    voiced = np.flatnonzero(20 * np.log10(np.maximum(rms, 1e-12) / peak) > -top_db)
    margin = int(margin_dur * sampling_rate)
    start = max(0, voiced[0] * frame - margin)
    stop = min(len(signal), (voiced[-1] + 1) * frame + margin)
    return signal[start:stop]


def fit_length(signal: np.ndarray, n_samples: int) -> np.ndarray:
    """Zero-pad at the end or cut to exactly ``n_samples``."""
    if len(signal) >= n_samples:
        return signal[:n_samples]
    return np.pad(signal, (0, n_samples - len(signal)))


def load_clip(
    source: str | Path | bytes | BinaryIO,
    clip_dur: float | None = 4.0,
    trim_top_db: float | None = None,
    sampling_rate: int = SAMPLING_RATE,
    name: str | None = None,
) -> np.ndarray:
    """Read a file as the models see it: mono, resampled, optionally trimmed, fixed length.

    Args:
        source: Path, bytes or binary file of a WAV/FLAC.
        clip_dur: Pad/trim to this many seconds; ``None`` keeps the natural length.
        trim_top_db: Trim leading/trailing silence quieter than this (dB below peak);
            ``None`` keeps it.
        sampling_rate: Output rate in Hz.
        name: Name for error messages.

    Returns:
        A float32 mono signal at ``sampling_rate``.
    """
    signal, rate = read_audio(source, name=name)
    return prepare_signal(signal, rate, clip_dur, trim_top_db, sampling_rate)


def prepare_signal(
    signal: np.ndarray,
    rate: int,
    clip_dur: float | None = 4.0,
    trim_top_db: float | None = None,
    sampling_rate: int = SAMPLING_RATE,
) -> np.ndarray:
    """What :func:`load_clip` does after reading: mono, resample, trim, fix the length.

    Args:
        signal: ``(n_samples,)`` or ``(n_samples, n_channels)`` samples in [-1, 1].
        rate: Its sampling rate in Hz.
        clip_dur: Pad/trim to this many seconds; ``None`` keeps the natural length.
        trim_top_db: Silence trimming threshold in dB below peak; ``None`` keeps it.
        sampling_rate: Output rate in Hz.
    """
    mono = resample(to_mono(np.asarray(signal, dtype=np.float32)), rate, sampling_rate)
    if trim_top_db is not None:
        mono = trim_silence(mono, sampling_rate, trim_top_db)
    if clip_dur is not None:
        mono = fit_length(mono, round(clip_dur * sampling_rate))
    return np.ascontiguousarray(mono, dtype=np.float32)
