"""openSMILE ComParE_2016 functionals: 6373 features per clip, the INTERSPEECH ComParE baseline set.

A large brute-force set (LLDs of energy, spectrum, MFCC, voicing, each with dozens of
functionals) where eGeMAPS is a small expert-chosen one; on speaker-independent RAVDESS speech a
strongly regularised logistic regression reads it better than eGeMAPS (reports/accuracy.md).
About 60 ms of openSMILE time per 2 s clip, so it is not in the default feature sets.
Extraction shares :mod:`components.features.egemaps`'s engine handling.
"""

from __future__ import annotations

import numpy as np

from components.features import egemaps

PARAMS: tuple[str, ...] = ()
N_FEATURES = 6373
SET_NAME = "ComParE_2016"


def feature_names() -> list[str]:
    """The 6373 ComParE_2016 functional names, in openSMILE's order."""
    return list(egemaps.smile(SET_NAME).feature_names)


def extract(signal: np.ndarray, sampling_rate: int) -> np.ndarray:
    """ComParE_2016 functionals of one natural-length clip.

    Args:
        signal: Mono float32 signal.
        sampling_rate: Its rate in Hz.

    Returns:
        A float32 vector of 6373 values named by :func:`feature_names` (NaN for clips too
        short to analyse).
    """
    return egemaps.functionals(signal, sampling_rate, SET_NAME, N_FEATURES)
