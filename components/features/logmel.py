"""Log-mel spectrogram of the fixed-length clip the sequence models read.

The clip is the natural signal zero-padded (or cut) to ``clip_dur`` seconds, as
``components.data.audio.load_clip`` makes it, so every row has the same shape
``(n_mels, n_frames)``. Values are dB (``10·log10`` of mel power, floored at -100 dB and at
80 dB below the clip's loudest value, librosa's ``power_to_db`` defaults) stored as float16:
half the bytes of float32, and its resolution (under 0.06 dB at ±100 dB) is far below
what a model can use.
"""

from __future__ import annotations

import numpy as np

from components.data.audio import fit_length
from components.features import spectral

PARAMS = ("clip_dur", "n_fft", "hop_length", "n_mels")
DTYPE = np.dtype("<f2")


def output_shape(
    sampling_rate: int, *, clip_dur: float = 4.0, n_fft: int = 1024, hop_length: int = 256, n_mels: int = 64
) -> tuple[int, int]:
    """``(n_mels, n_frames)`` of every array :func:`extract` returns for these settings."""
    del n_fft  # accepted so that every key of PARAMS can be passed
    return n_mels, spectral.count_frames(_clip_samples(sampling_rate, clip_dur), hop_length)


def frame_plan(
    n_samples: int, sampling_rate: int, clip_dur: float, n_fft: int, hop_length: int
) -> tuple[int, int, int]:
    """Which STFT frames of the fixed-length clip need computing, and which can be shared.

    Args:
        n_samples: Length of the natural signal.
        sampling_rate: Rate in Hz.
        clip_dur: Fixed clip length in seconds.
        n_fft: Frame length.
        hop_length: Frame hop.

    Returns:
        ``(n_total, n_data, n_shared)``: frames of the clip; leading frames that touch
        signal (the rest are all zeros); leading frames identical to the natural signal's
        own STFT frames (all of them when the clip is padded, fewer when it is cut).
    """
    clip_samples = _clip_samples(sampling_rate, clip_dur)
    n_total = spectral.count_frames(clip_samples, hop_length)
    half = n_fft // 2
    n_data = min(n_total, -(-(min(n_samples, clip_samples) + half) // hop_length))
    if n_samples <= clip_samples:
        n_shared = n_total  # padding with zeros is what the centred STFT does anyway
    else:
        n_shared = min(n_total, max(0, (clip_samples + half - n_fft) // hop_length + 1))
    return n_total, n_data, n_shared


def extract(
    signal: np.ndarray,
    sampling_rate: int,
    *,
    clip_dur: float = 4.0,
    n_fft: int = 1024,
    hop_length: int = 256,
    n_mels: int = 64,
) -> np.ndarray:
    """Log-mel spectrogram of ``signal`` padded or cut to ``clip_dur`` seconds.

    Args:
        signal: Mono float32 signal at its natural length.
        sampling_rate: Its rate in Hz.
        clip_dur: Fixed clip length in seconds.
        n_fft: STFT frame length in samples.
        hop_length: Samples between frames.
        n_mels: Mel bands.

    Returns:
        float16 array of shape :func:`output_shape`.
    """
    n_total, n_data, _ = frame_plan(len(signal), sampling_rate, clip_dur, n_fft, hop_length)
    clip = fit_length(signal, _clip_samples(sampling_rate, clip_dur))
    power = spectral.power_spectrum(spectral.frame_signal(clip, n_fft, hop_length, 0, n_data))
    return from_mel_power(spectral.mel_power(power, sampling_rate, n_mels), n_total)


def from_mel_power(mel_power: np.ndarray, n_total: int) -> np.ndarray:
    """The stored array from the mel power of the clip's leading frames (the rest are silent).

    Args:
        mel_power: ``(n_data, n_mels)`` mel power of frames ``0..n_data-1``.
        n_total: Frames of the whole clip.

    Returns:
        ``(n_mels, n_total)`` float16 dB values.
    """
    full = np.zeros((n_total, mel_power.shape[1]), dtype=np.float32)
    full[: len(mel_power)] = mel_power[:n_total]
    return np.ascontiguousarray(spectral.power_to_db(full).T, dtype=DTYPE)


def _clip_samples(sampling_rate: int, clip_dur: float) -> int:
    return round(clip_dur * sampling_rate)  # as components.data.audio.load_clip rounds it
