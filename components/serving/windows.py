"""Sliding windows over long recordings, and the aggregation of their predictions.

The models were trained on whole RAVDESS clips (3-6 s, features over the natural length,
log-mels fitted to ``preprocess.clip_dur``). A recording much longer than that is scored
window by window, each window as long as a training clip, and the file's answer is the
mean of the windows' probabilities. Windows are planned from the file's length alone, so
``ser predict`` decodes one window at a time (memory flat however long the recording).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from components.errors import SerError


@dataclass(frozen=True)
class Window:
    """One window of a signal: sample bounds and the same in seconds."""

    start: int
    stop: int
    sampling_rate: int

    @property
    def start_dur(self) -> float:
        """Start in seconds."""
        return self.start / self.sampling_rate

    @property
    def stop_dur(self) -> float:
        """End in seconds."""
        return self.stop / self.sampling_rate


def plan_windows(
    n_samples: int, sampling_rate: int, window_dur: float, hop_dur: float, long_dur: float | None = None
) -> list[Window]:
    """Where to cut a signal of ``n_samples`` into windows.

    A signal no longer than ``long_dur`` (default: ``window_dur``) is one window, the whole
    signal. A longer one gets windows of ``window_dur`` every ``hop_dur`` seconds; the last
    window is aligned to the end, so the tail is scored too and no window is shorter than
    the others.

    Args:
        n_samples: Length of the signal.
        sampling_rate: Its rate in Hz.
        window_dur: Window length in seconds (the model's clip length).
        hop_dur: Seconds between window starts (e.g. half a window).
        long_dur: Signals up to this many seconds are scored whole.

    Raises:
        SerError: A non-positive length, or a hop longer than the window (samples would be skipped).
    """
    if window_dur <= 0 or hop_dur <= 0:
        raise SerError(f"window ({window_dur} s) and hop ({hop_dur} s) must be positive")
    if hop_dur > window_dur:
        raise SerError(f"hop ({hop_dur} s) longer than the window ({window_dur} s) would skip audio")
    long_dur = window_dur if long_dur is None else max(long_dur, window_dur)
    if n_samples <= round(long_dur * sampling_rate):
        return [Window(0, n_samples, sampling_rate)]
    size, hop = round(window_dur * sampling_rate), max(1, round(hop_dur * sampling_rate))
    starts = list(range(0, n_samples - size + 1, hop))
    if starts[-1] + size < n_samples:
        starts.append(n_samples - size)
    return [Window(start, start + size, sampling_rate) for start in starts]


def mean_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """The file's probabilities: the mean over its windows (rows), renormalised to sum to 1."""
    mean = np.asarray(probabilities, dtype=np.float64).mean(axis=0)
    total = mean.sum()
    return mean / total if total > 0 else mean


def top_k(probabilities: Sequence[float], names: Sequence[str], k: int = 3) -> list[tuple[str, float]]:
    """The ``k`` likeliest names with their probabilities, likeliest first (ties: first name wins)."""
    order = np.argsort(-np.asarray(probabilities, dtype=np.float64), kind="stable")[:k]
    return [(names[i], float(probabilities[i])) for i in order]
