"""Refusing clips a model should not score: a model names an emotion even for silence or a hum.

Every way a clip reaches a model (``ser predict``, predict-batch, the REST server, the web demo)
applies the per-clip checks of ``ser validate`` (:mod:`components.data.clip_checks`) with the
limits recorded with the model. Files are checked from their header first, then streamed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.data.audio import probe_audio
from components.data.clip_checks import ClipLimits, check_header, check_signal
from components.data.metadata import describe_audio, describe_signal

DEFAULT_SILENCE_DBFS = ClipLimits().silence_dbfs  # levels are measured even when the silence test is lifted


def check_clip(signal: np.ndarray, sampling_rate: int, name: str, limits: ClipLimits) -> None:
    """Raise unless an in-memory clip passes every check (rate, duration, silence, DC, clipping).

    Args:
        signal: ``(n_samples,)`` or ``(n_samples, n_channels)`` samples in [-1, 1].
        sampling_rate: Its rate in Hz.
        name: What to call the clip in the message (a file, or a request row).
        limits: The thresholds (the model's recorded ones).

    Raises:
        SerError: One line naming ``name`` and every check it fails.
    """
    check_header(name, sampling_rate, len(signal), limits)
    check_signal(name, describe_signal(signal, sampling_rate, _dbfs(limits)), limits)


def check_file(path: str | Path, limits: ClipLimits, name: str | None = None) -> tuple[int, int]:
    """Check a file without holding it: the header's rate and duration first, then its levels in blocks.

    Args:
        path: An audio file; symlinks are followed, devices and FIFOs refused.
        limits: The thresholds; ``max_audio_dur`` None for recordings scored in windows.
        name: What to call it in messages (default: the path).

    Returns:
        ``(n_samples, sampling_rate)`` as decoded (a truncated file may hold fewer than its header says).

    Raises:
        SerError: One line naming the file and what is wrong with it.
    """
    name = name or str(path)
    info = probe_audio(path, name)
    check_header(name, info.sampling_rate, info.n_frames, limits)  # before a sample is decoded
    stats = describe_audio(path, name, _dbfs(limits))
    n_samples = round(stats["audio_dur"] * info.sampling_rate)
    check_header(name, info.sampling_rate, n_samples, limits)
    check_signal(name, stats, limits)
    return n_samples, info.sampling_rate


def _dbfs(limits: ClipLimits) -> float:
    return limits.silence_dbfs if limits.silence_dbfs is not None else DEFAULT_SILENCE_DBFS
