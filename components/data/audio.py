"""Reading audio files into mono 16 kHz float32 signals of a fixed length."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from components.errors import SerError

SAMPLING_RATE = 16_000  # what every model in the pipeline consumes (wav2vec2's rate)
# what libsndfile reads: the suffixes `ser predict` looks for in a folder
READABLE_SUFFIXES: tuple[str, ...] = (".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".mp3")
BLOCK_DUR = 10.0  # seconds decoded at a time when a file is streamed: memory stays flat whatever its length
_FILE_KINDS = {
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISFIFO: "a named pipe (FIFO)",
    stat.S_ISSOCK: "a socket",
    stat.S_ISDIR: "a folder",
}


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says, read before any sample is decoded."""

    sampling_rate: int
    n_frames: int
    n_channels: int

    @property
    def audio_dur(self) -> float:
        """Duration in seconds."""
        return self.n_frames / self.sampling_rate


def regular_file(path: str | Path, name: str | None = None) -> Path:
    """``path`` if it is (or links to) a non-empty regular file; devices, FIFOs and folders are refused.

    Reading ``/dev/zero`` or a FIFO named ``clip.wav`` would never end; a dangling symlink would
    otherwise be skipped without a word.

    Raises:
        SerError: Missing, a dangling symlink, not a regular file, unreadable, or empty.
    """
    path, label = Path(path), name or str(path)
    try:
        info = path.stat()  # follows symlinks
    except FileNotFoundError as err:
        if path.is_symlink():
            target = os.readlink(path)
            raise SerError(f"{label}: dangling symlink (its target {target} does not exist)") from err
        raise SerError(f"{label}: file not found") from err
    except OSError as err:
        raise SerError(f"{label}: cannot be read ({err.strerror or err})") from err
    for is_kind, kind in _FILE_KINDS.items():
        if is_kind(info.st_mode):
            raise SerError(f"{label}: not a regular file ({kind}); give an audio file")
    if info.st_size == 0:
        raise SerError(f"{label}: the file is empty (zero length, 0 bytes)")
    return path


def probe_audio(source: str | Path | bytes | BinaryIO, name: str | None = None) -> AudioInfo:
    """Rate, length and channels from the header alone (a path must be a regular file).

    Raises:
        SerError: Not a regular file, not audio soundfile reads, or a header with no samples or no rate.
    """
    label = name or (str(source) if isinstance(source, (str, Path)) else "<audio bytes>")
    if isinstance(source, (str, Path)):
        source = regular_file(source, label)
    elif isinstance(source, bytes):
        if not source:
            raise SerError(f"{label}: the file is empty (zero length, 0 bytes)")
        source = io.BytesIO(source)
    start = source.tell() if hasattr(source, "tell") else None
    try:
        info = sf.info(source)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        detail = getattr(err, "error_string", None) or str(err)
        raise SerError(f"{label}: not a readable WAV/FLAC file ({detail})") from err
    finally:
        if start is not None:
            source.seek(start)
    if info.samplerate <= 0:
        raise SerError(f"{label}: sampling rate {info.samplerate} Hz in the header is not positive")
    if info.frames <= 0:
        raise SerError(f"{label}: the file holds no samples (zero length)")
    return AudioInfo(int(info.samplerate), int(info.frames), int(info.channels))


def iter_blocks(
    source: str | Path | BinaryIO, block_dur: float = BLOCK_DUR, name: str | None = None
) -> Iterator[np.ndarray]:
    """The file's samples, ``block_dur`` seconds at a time, float32 ``(n, n_channels)``.

    Raises:
        SerError: Not a regular file, unreadable, or a block holds NaN/Inf samples.
    """
    label = name or (str(source) if isinstance(source, (str, Path)) else "<audio bytes>")
    if isinstance(source, (str, Path)):
        source = regular_file(source, label)
    try:
        with sf.SoundFile(source) as audio:
            size = max(1, round(block_dur * audio.samplerate))
            while True:
                block = audio.read(size, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    return
                if not np.isfinite(block).all():
                    raise SerError(f"{label}: the file holds NaN or infinite samples")
                yield block
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        detail = getattr(err, "error_string", None) or str(err)
        raise SerError(f"{label}: not a readable WAV/FLAC file ({detail})") from err


def read_frames(path: str | Path, start: int, stop: int, name: str | None = None) -> np.ndarray:
    """Samples ``start:stop`` of a file, float32 ``(n, n_channels)``, decoding nothing else.

    Raises:
        SerError: Not a regular file, unreadable, or the range holds NaN/Inf samples.
    """
    label = name or str(path)
    try:
        file = regular_file(path, label)
        signal, _ = sf.read(file, start=start, stop=stop, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        detail = getattr(err, "error_string", None) or str(err)
        raise SerError(f"{label}: not a readable WAV/FLAC file ({detail})") from err
    if not np.isfinite(signal).all():
        raise SerError(f"{label}: the file holds NaN or infinite samples")
    return signal


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
    elif isinstance(source, (str, Path)):
        source = regular_file(source, label)  # /dev/zero or a FIFO would be read for ever
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
