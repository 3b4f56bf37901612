"""The one short-time Fourier transform that every spectral feature of a clip shares.

The STFT is librosa's default one (centred frames, zero padding, periodic Hann window), so
features computed here match ``librosa.feature.*`` on the same signal, but it is computed
once per clip and read by every feature set. Frames are rows: ``(n_frames, n_bins)``.
Filterbanks are built once per process (``functools.lru_cache``).

The filterbank projections avoid BLAS on purpose: a BLAS product's last bits depend on
how many threads it is split over, and a process-wide thread setting cannot be held
safely when a runner extracts clips in threads. The mel projection uses that every FFT
bin lies on at most two triangular filters (two segmented sums); chroma is a small
``einsum``. Together they cost under a millisecond a clip, and values are identical
however the work is scheduled (processes, threads, inline).
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np
import scipy.fft

AMIN = 1e-10  # power floor before the log (-100 dB), librosa's default
TOP_DB = 80.0  # dynamic range kept below a spectrogram's loudest value, librosa's default


def count_frames(n_samples: int, hop_length: int) -> int:
    """Frames of a centred STFT of ``n_samples``: one per hop, the first centred on sample 0."""
    return 1 + n_samples // hop_length


def frame_signal(signal: np.ndarray, n_fft: int, hop_length: int, start: int, stop: int) -> np.ndarray:
    """Frames ``start..stop-1`` of a centred STFT, the signal zero-padded on both sides.

    Args:
        signal: Mono float32 signal.
        n_fft: Frame length in samples.
        hop_length: Samples between frame starts.
        start: First frame index.
        stop: One past the last frame index.

    Returns:
        A read-only ``(stop - start, n_fft)`` float32 view; frame ``t`` is centred on
        sample ``t * hop_length``.
    """
    first = start * hop_length - n_fft // 2  # first sample of the first frame (negative = padding)
    end = (stop - 1) * hop_length - n_fft // 2 + n_fft
    segment = np.zeros(max(end - first, n_fft), dtype=np.float32)
    lo, hi = max(first, 0), min(end, len(signal))
    if hi > lo:
        segment[lo - first : hi - first] = signal[lo:hi]
    return np.lib.stride_tricks.sliding_window_view(segment, n_fft)[::hop_length][: stop - start]


def power_spectrum(frames: np.ndarray) -> np.ndarray:
    """``|FFT(frame * hann)|²`` of each frame: ``(n_frames, n_fft // 2 + 1)`` float32."""
    spectrum = scipy.fft.rfft(frames * hann_window(frames.shape[1]), axis=1)
    return np.square(spectrum.real) + np.square(spectrum.imag)


def power_to_db(power: np.ndarray, amin: float = AMIN, top_db: float | None = TOP_DB) -> np.ndarray:
    """``10·log10(power)`` floored at ``amin`` and at ``top_db`` below the maximum (librosa's rule)."""
    db = 10.0 * np.log10(np.maximum(power, amin))
    if top_db is not None and db.size:
        np.maximum(db, db.max() - top_db, out=db)
    return db


@lru_cache(maxsize=8)
def hann_window(n_fft: int) -> np.ndarray:
    """The periodic Hann window (``scipy.signal.get_window('hann', n_fft)``) in float32."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


@lru_cache(maxsize=8)
def mel_basis(sampling_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """``librosa.filters.mel`` (Slaney scale and norm, 0 Hz to Nyquist): ``(n_mels, n_bins)`` float32.

    Written out here rather than imported: importing librosa costs a worker process about
    1.7 s, more than extracting a hundred clips. Tests check it equals librosa's.
    """
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sampling_rate / 2), n_mels + 2))
    ramps = edges[:, None] - np.fft.rfftfreq(n_fft, 1.0 / sampling_rate)[None, :]
    widths = np.diff(edges)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


@lru_cache(maxsize=8)
def chroma_basis(sampling_rate: int, n_fft: int, n_chroma: int = 12) -> np.ndarray:
    """``librosa.filters.chroma`` at ``tuning=0.0`` (C first, octave weighting): ``(12, n_bins)`` float32.

    The tuning is fixed rather than estimated: ``librosa.feature.chroma_stft`` estimates it
    with ``piptrack``, which segfaults under numba 0.68 on float32 audio, and a per-clip
    tuning would make the features depend on a noisy pitch estimate. Written out here for
    the same start-up reason as :func:`mel_basis`; tests check it equals librosa's.
    """
    frequencies = np.linspace(0, sampling_rate, n_fft, endpoint=False)[1:]
    bins = n_chroma * np.log2(frequencies / (440.0 / 16))  # octaves above A0 (librosa's hz_to_octs)
    bins = np.concatenate(([bins[0] - 1.5 * n_chroma], bins))
    widths = np.concatenate((np.maximum(bins[1:] - bins[:-1], 1.0), [1.0]))
    half = np.round(n_chroma / 2)
    distance = (
        np.remainder(bins[None, :] - np.arange(n_chroma)[:, None] + half + 10 * n_chroma, n_chroma) - half
    )
    weights = np.exp(-0.5 * (2 * distance / widths[None, :]) ** 2)
    norms = np.sqrt((weights**2).sum(axis=0))
    weights /= np.where(norms < np.finfo(np.float64).tiny, 1.0, norms)
    weights *= np.exp(-0.5 * ((bins / n_chroma - 5.0) / 2.0) ** 2)  # centre octave 5, half-width 2 octaves
    weights = np.roll(weights, -3 * (n_chroma // 12), axis=0)  # start at C rather than A
    return np.ascontiguousarray(weights[:, : 1 + n_fft // 2], dtype=np.float32)


def mel_power(power: np.ndarray, sampling_rate: int, n_mels: int) -> np.ndarray:
    """Mel power of row frames, ``power @ mel_basis(...).T`` without BLAS: ``(n_frames, n_mels)``."""
    n_fft = 2 * (power.shape[1] - 1)
    out = np.zeros((power.shape[0], n_mels), dtype=np.float32)
    for weights, starts, filters in _mel_slopes(sampling_rate, n_fft, n_mels):
        out[:, filters] += np.add.reduceat(power * weights, starts, axis=1)
    return out


def chroma_power(power: np.ndarray, sampling_rate: int) -> np.ndarray:
    """Chroma energy of row frames, ``power @ chroma_basis(...).T`` without BLAS: ``(n_frames, 12)``."""
    n_fft = 2 * (power.shape[1] - 1)
    return np.einsum("ij,kj->ik", power, chroma_basis(sampling_rate, n_fft))  # both contiguous along j


@lru_cache(maxsize=8)
def _mel_slopes(
    sampling_rate: int, n_fft: int, n_mels: int
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]:
    """The mel filterbank as two sparse layers: each bin's first and second filter.

    Returns:
        Per layer: bin weights ``(n_bins,)`` (0 where the bin has no filter in the layer),
        the first bin of each run of bins sharing a filter, and that filter's index.
    """
    basis = mel_basis(sampling_rate, n_fft, n_mels).T  # (n_bins, n_mels)
    layers = []
    for rank in range(2):
        filters = np.full(len(basis), -1)
        weights = np.zeros(len(basis), dtype=np.float32)
        for row, nonzero in enumerate(basis > 0):
            found = np.flatnonzero(nonzero)
            if len(found) > rank:
                filters[row], weights[row] = found[rank], basis[row, found[rank]]
        used = np.flatnonzero(filters >= 0)
        starts = used[np.r_[True, np.diff(filters[used]) != 0]] if len(used) else np.zeros(0, dtype=int)
        if len(starts):
            layers.append((weights, starts, filters[starts]))
    if (basis > 0).sum(axis=1).max(initial=0) > 2:
        raise ValueError("a bin lies on more than two mel filters")  # impossible for triangular filters
    return tuple(layers)


def _hz_to_mel(hz: float | np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    return np.where(
        hz >= 1000.0, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), linear
    )


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    linear = mel * (200.0 / 3)
    return np.where(mel >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0)), linear)


@lru_cache(maxsize=8)
def contrast_bands(
    sampling_rate: int, n_fft: int, n_bands: int = 6, fmin: float = 200.0, quantile: float = 0.02
) -> tuple[tuple[np.ndarray, int], ...]:
    """Octave sub-bands of ``librosa.feature.spectral_contrast``: (bin indices, n_bins averaged)."""
    freq = np.linspace(0, sampling_rate / 2, 1 + n_fft // 2)
    edges = np.zeros(n_bands + 2)
    edges[1:] = fmin * 2.0 ** np.arange(n_bands + 1)
    bands = []
    for k, (f_low, f_high) in enumerate(itertools.pairwise(edges)):
        band = (freq >= f_low) & (freq <= f_high)
        idx = np.flatnonzero(band)
        if k > 0:
            band[idx[0] - 1] = True
        if k == n_bands:
            band[idx[-1] + 1 :] = True
        bins = np.flatnonzero(band)
        n_avg = max(int(np.rint(quantile * len(bins))), 1)
        bands.append((bins if k == n_bands else bins[:-1], n_avg))
    return tuple(bands)


def spectral_contrast(magnitude: np.ndarray, sampling_rate: int, n_fft: int) -> np.ndarray:
    """``librosa.feature.spectral_contrast`` (6 bands from 200 Hz) of row frames: ``(n_frames, 7)``."""
    bands = contrast_bands(sampling_rate, n_fft)
    peak = np.empty((magnitude.shape[0], len(bands)))
    valley = np.empty_like(peak)
    for k, (bins, n_avg) in enumerate(bands):
        ranked = np.sort(magnitude[:, bins], axis=1)
        valley[:, k] = ranked[:, :n_avg].mean(axis=1)
        peak[:, k] = ranked[:, -n_avg:].mean(axis=1)
    return power_to_db(peak) - power_to_db(valley)  # librosa's dB of magnitudes, top_db over all bands
