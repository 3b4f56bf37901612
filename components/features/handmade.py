"""The original project's hand-made clip statistics, computed from one shared STFT.

MFCCs (mean, std, std of deltas), chroma, spectral contrast, zero-crossing rate and RMS
summarise the spectral frames; loudness, peak, an SNR estimate and the silent share
describe the recording level. Statistics run on the natural-length signal: zero padding
would pull means and stds towards silence.

Levels are in dB relative to full scale (dBFS), where a full-scale square wave reads 0 dB
and a full-scale sine -3 dB.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from components.features import spectral

PARAMS = ("n_fft", "hop_length", "n_mels", "n_mfcc", "silence_dbfs")
N_CHROMA = 12
N_CONTRAST = 7  # librosa's default: 6 octave bands from 200 Hz plus the band above them
SNR_SHARE = 0.1  # the loudest and the quietest tenth of frames stand for speech and noise
DB_FLOOR = -120.0  # level reported for digital silence
POWER_FLOOR = 10.0 ** (DB_FLOOR / 10.0)


def feature_names(
    *,
    n_fft: int = 1024,
    hop_length: int = 256,
    n_mels: int = 64,
    n_mfcc: int = 40,
    silence_dbfs: float = -60.0,
) -> list[str]:
    """Column names of :func:`extract`'s vector, in order (only ``n_mfcc`` changes them)."""
    del n_fft, hop_length, n_mels, silence_dbfs  # accepted so that every key of PARAMS can be passed
    names = []
    for stat in ("mfcc_mean", "mfcc_std", "mfcc_delta_std"):
        names += [f"{stat}_{i}" for i in range(n_mfcc)]
    for stat in ("chroma_mean", "chroma_std"):
        names += [f"{stat}_{i}" for i in range(N_CHROMA)]
    for stat in ("contrast_mean", "contrast_std"):
        names += [f"{stat}_{i}" for i in range(N_CONTRAST)]
    names += ["zcr_mean", "zcr_std", "rms_mean", "rms_std"]
    names += ["loudness_dbfs", "peak_dbfs", "snr_db", "silent_share"]
    return names


def extract(
    signal: np.ndarray,
    sampling_rate: int,
    *,
    n_fft: int = 1024,
    hop_length: int = 256,
    n_mels: int = 64,
    n_mfcc: int = 40,
    silence_dbfs: float = -60.0,
) -> np.ndarray:
    """Hand-made statistics of one natural-length clip.

    Args:
        signal: Mono float32 signal (not padded).
        sampling_rate: Its rate in Hz.
        n_fft: STFT frame length in samples.
        hop_length: Samples between STFT frames.
        n_mels: Mel bands the MFCCs are computed from.
        n_mfcc: MFCC coefficients kept.
        silence_dbfs: A frame whose RMS level is at or below this is silent.

    Returns:
        A float32 vector named by :func:`feature_names`.
    """
    frames = spectral.frame_signal(
        signal, n_fft, hop_length, 0, spectral.count_frames(len(signal), hop_length)
    )
    power = spectral.power_spectrum(frames)
    mel_power = spectral.mel_power(power, sampling_rate, n_mels)
    return from_spectra(
        signal, frames, power, mel_power, sampling_rate, n_mfcc=n_mfcc, silence_dbfs=silence_dbfs
    )


def from_spectra(
    signal: np.ndarray,
    frames: np.ndarray,
    power: np.ndarray,
    mel_power: np.ndarray,
    sampling_rate: int,
    *,
    n_mfcc: int,
    silence_dbfs: float,
) -> np.ndarray:
    """:func:`extract` from an STFT computed elsewhere (frames as rows, natural frames only).

    Args:
        signal: The mono signal the frames were cut from (for its peak).
        frames: ``(n_frames, n_fft)`` time-domain frames.
        power: ``(n_frames, n_bins)`` power spectrum of the Hann-windowed frames.
        mel_power: ``(n_frames, n_mels)`` mel power, ``spectral.mel_power(power, ...)``.
        sampling_rate: Rate in Hz.
        n_mfcc: MFCC coefficients kept.
        silence_dbfs: Silent-frame threshold in dBFS.

    Returns:
        The float32 feature vector.
    """
    n_fft = frames.shape[1]
    mfcc = scipy.fft.dct(spectral.power_to_db(mel_power), type=2, norm="ortho", axis=1)[:, :n_mfcc]
    chroma = spectral.chroma_power(power, sampling_rate)
    chroma_peak = chroma.max(axis=1, keepdims=True)
    chroma /= np.where(chroma_peak > np.finfo(np.float32).tiny, chroma_peak, 1.0)  # librosa's max-norm
    contrast = spectral.spectral_contrast(np.sqrt(power), sampling_rate, n_fft)
    negative = frames < 0
    zcr = np.count_nonzero(negative[:, 1:] != negative[:, :-1], axis=1) / n_fft
    mean_square = np.einsum("ij,ij->i", frames, frames, dtype=np.float64) / n_fft
    rms = np.sqrt(mean_square)
    parts = [
        mfcc.mean(axis=0),
        mfcc.std(axis=0),
        _delta(mfcc).std(axis=0),
        chroma.mean(axis=0),
        chroma.std(axis=0),
        contrast.mean(axis=0),
        contrast.std(axis=0),
        [zcr.mean(), zcr.std(), rms.mean(), rms.std()],
        _levels(signal, mean_square, silence_dbfs),
    ]
    return np.concatenate([np.asarray(part, dtype=np.float64) for part in parts]).astype(np.float32)


def _delta(features: np.ndarray, width: int = 2) -> np.ndarray:
    """HTK regression deltas over ±``width`` frames, edges repeated (defined for any length)."""
    padded = np.pad(features, ((width, width), (0, 0)), mode="edge")
    n = len(features)
    delta = sum(
        k * (padded[width + k : width + k + n] - padded[width - k : width - k + n])
        for k in range(1, width + 1)
    )
    return delta / (2 * sum(k * k for k in range(1, width + 1)))


def _levels(signal: np.ndarray, mean_square: np.ndarray, silence_dbfs: float) -> list[float]:
    """Loudness of active frames, peak, SNR (loud vs quiet frames) and silent share."""
    level_db = 10.0 * np.log10(np.maximum(mean_square, POWER_FLOOR))
    silent = level_db <= silence_dbfs
    active = mean_square[~silent] if not silent.all() else mean_square
    loudness = 10.0 * np.log10(max(float(active.mean()), POWER_FLOOR))
    peak = float(np.abs(signal).max()) if len(signal) else 0.0
    peak_db = 20.0 * np.log10(max(peak, 10.0 ** (DB_FLOOR / 20.0)))
    ranked = np.sort(mean_square)
    n_edge = max(1, round(SNR_SHARE * len(ranked)))
    snr = 10.0 * np.log10((ranked[-n_edge:].mean() + POWER_FLOOR) / (ranked[:n_edge].mean() + POWER_FLOOR))
    return [loudness, peak_db, snr, float(silent.mean())]
