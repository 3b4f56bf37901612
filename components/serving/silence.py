"""Refusing silent clips: a model names an emotion even for silence, often with high confidence.

One check for every way a clip reaches a model (``ser predict``, the REST server, the web demo),
with validate's test of a silent clip (``validate.silence_dbfs``, ``validate.max_silent_share``).
"""

from __future__ import annotations

import numpy as np

from components.data.metadata import describe_signal
from components.errors import SerError

SILENCE_DBFS = -60.0  # params.yaml validate.silence_dbfs, for a served model that has no params.yaml
MAX_SILENT_SHARE = 0.98  # params.yaml validate.max_silent_share, likewise


def check_not_silent(
    signal: np.ndarray,
    sampling_rate: int,
    name: str,
    silence_dbfs: float = SILENCE_DBFS,
    max_silent_share: float = MAX_SILENT_SHARE,
) -> None:
    """Raise unless the clip holds sound: not all zero, not silent in nearly every frame.

    Args:
        signal: ``(n_samples,)`` or ``(n_samples, n_channels)`` samples in [-1, 1].
        sampling_rate: Its rate in Hz.
        name: What to call the clip in the message (a file, or a request row).
        silence_dbfs: A 25 ms frame whose RMS is below this level (dBFS) is silent.
        max_silent_share: A clip with a larger share of silent frames is refused.

    Raises:
        SerError: The clip is silent; the message names it and says what is silent about it.
    """
    samples = np.asarray(signal, dtype=np.float32)
    stats = describe_signal(samples[:, None] if samples.ndim == 1 else samples, sampling_rate, silence_dbfs)
    if stats["peak"] == 0.0:
        level = "every sample is zero"
    elif stats["silent_share"] > max_silent_share:
        level = f"{stats['silent_share']:.0%} of it is below {silence_dbfs:g} dBFS"
    else:
        return
    raise SerError(f"{name}: the clip is silent ({level}); record or upload one with speech in it")
