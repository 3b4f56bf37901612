"""Clip statistics of the stored log-mel sequences (a classical model option): band levels, cepstra, dynamics.

The hand-made set summarises MFCCs by mean and spread only. These functionals add what it
leaves out, from the log-mel array every deep model already reads (so no extra extraction
and no new cache): per mel band the mean, spread, 10th and 90th percentile and mean absolute
change; per cepstral coefficient (DCT of the bands) the mean, spread, skew and the spread of
first and second differences; the share of active frames. Statistics run over the *active*
frames only (loudest band within ``active_db`` of the clip's loudest frame), so the zero
padding of the fixed-length clip does not pull them towards silence.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from components.errors import SerError

N_CEPSTRA = (
    20  # cepstral coefficients summarised (the first ones carry the spectral envelope); at most n_mels
)
ACTIVE_DB = 60.0  # a frame is active when its loudest band is within this of the clip's loudest value
MIN_ACTIVE_FRAMES = 5  # fewer active frames than this (a near-silent clip): use every frame
BAND_STATS = ("mean", "std", "p10", "p90", "abs_delta")
CEPSTRUM_STATS = ("mean", "std", "skew", "delta_std", "delta2_std")


def feature_names(n_mels: int, n_cepstra: int = N_CEPSTRA) -> list[str]:
    """Column names of :func:`summarize`'s rows, in order."""
    n_cepstra = min(n_cepstra, n_mels)
    names = [f"band_{stat}_{i}" for stat in BAND_STATS for i in range(n_mels)]
    names += [f"cep_{stat}_{i}" for stat in CEPSTRUM_STATS for i in range(n_cepstra)]
    return [*names, "active_share"]


def summarize(logmel: np.ndarray, n_cepstra: int = N_CEPSTRA, active_db: float = ACTIVE_DB) -> np.ndarray:
    """Functionals of each clip's log-mel sequence.

    Args:
        logmel: ``[n_clips, n_mels, n_frames]`` dB values (any float dtype), as the logmel set stores.
        n_cepstra: Cepstral coefficients kept (fewer when there are fewer mel bands).
        active_db: Frames quieter than the clip's loudest value minus this are left out.

    Returns:
        float32 ``[n_clips, len(feature_names(n_mels, n_cepstra))]``.

    Raises:
        SerError: ``logmel`` is not 3-D.
    """
    logmel = np.asarray(logmel)
    if logmel.ndim != 3:
        raise SerError(f"log-mel statistics need [n_clips, n_mels, n_frames], got shape {logmel.shape}")
    n_cepstra = min(n_cepstra, logmel.shape[1])
    width = len(feature_names(logmel.shape[1], n_cepstra))
    out = np.empty((len(logmel), width), dtype=np.float32)
    for row, clip in enumerate(logmel):
        out[row] = _summarize_clip(clip.astype(np.float32), n_cepstra, active_db)
    return out


def _summarize_clip(clip: np.ndarray, n_cepstra: int, active_db: float) -> np.ndarray:
    loudest = clip.max(axis=0)
    active = loudest > clip.max() - active_db
    if active.sum() < MIN_ACTIVE_FRAMES:
        active[:] = True
    bands = clip[:, active]
    cepstra = scipy.fft.dct(bands, axis=0, norm="ortho")[:n_cepstra]
    delta = np.diff(cepstra, axis=1)
    centred = cepstra - cepstra.mean(axis=1, keepdims=True)
    spread = cepstra.std(axis=1)
    parts = [
        bands.mean(axis=1),
        bands.std(axis=1),
        np.percentile(bands, 10, axis=1),
        np.percentile(bands, 90, axis=1),
        np.abs(np.diff(bands, axis=1)).mean(axis=1) if bands.shape[1] > 1 else np.zeros(len(bands)),
        cepstra.mean(axis=1),
        spread,
        (centred**3).mean(axis=1) / (spread**3 + 1e-6),
        delta.std(axis=1) if delta.shape[1] else np.zeros(n_cepstra),
        np.diff(delta, axis=1).std(axis=1) if delta.shape[1] > 1 else np.zeros(n_cepstra),
        [active.mean()],
    ]
    return np.concatenate([np.ravel(part) for part in parts])
