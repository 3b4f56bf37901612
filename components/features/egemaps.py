"""openSMILE eGeMAPSv02 functionals: 88 standard paralinguistic features per clip.

Computed on the natural-length signal (zero padding would change the statistics). One
``opensmile.Smile`` object is created per process on first use (parsing its configuration
costs about 0.3 s); a clip then costs about 40 ms of openSMILE's own time.

``opensmile.Smile`` builds and frees a native openSMILE instance for every signal. Where
the installed opensmile allows it, one instance per process is reused instead, reset
between clips with ``smile_reset`` (documented in openSMILE's SMILEapi.h for exactly this),
saving about 10 % per clip. That path uses opensmile internals, so it is checked once per
process against the public API on a probe signal and dropped on any difference or error.

The machinery takes any openSMILE functionals set by name (``smile(name)``,
``functionals(...)``); :mod:`components.features.compare` uses it for ComParE_2016.
"""

from __future__ import annotations

import os
import threading
from functools import cache
from typing import Any

import numpy as np

PARAMS: tuple[str, ...] = ()
N_FEATURES = 88
SET_NAME = "eGeMAPSv02"  # the opensmile.FeatureSet member
_INT16_MAX = 32767 / 32768  # openSMILE multiplies by 32768 and casts to int16, wrapping above this
_ENGINES = threading.local()  # a native instance must not be shared between threads


@cache
def smile(set_name: str = SET_NAME) -> Any:
    """The process's ``opensmile.Smile`` for the functionals of ``set_name`` (created once per set)."""
    import opensmile  # imported on first use: about half a second

    return opensmile.Smile(
        feature_set=opensmile.FeatureSet[set_name], feature_level=opensmile.FeatureLevel.Functionals
    )


def feature_names() -> list[str]:
    """The 88 eGeMAPSv02 functional names, in openSMILE's order."""
    return list(smile().feature_names)


def extract(signal: np.ndarray, sampling_rate: int) -> np.ndarray:
    """eGeMAPSv02 functionals of one natural-length clip.

    Args:
        signal: Mono float32 signal.
        sampling_rate: Its rate in Hz.

    Returns:
        A float32 vector of 88 values named by :func:`feature_names`. openSMILE returns
        NaN for clips too short to analyse (well under the 0.5 s validation accepts).
    """
    return functionals(signal, sampling_rate, SET_NAME, N_FEATURES)


def functionals(signal: np.ndarray, sampling_rate: int, set_name: str, n_features: int) -> np.ndarray:
    """The openSMILE functionals ``set_name`` (``n_features`` values) of one natural-length clip."""
    # Samples at or above +1.0 (a resampled full-scale clip) would wrap to -32768.
    safe = np.clip(signal, -1.0, _INT16_MAX).astype(np.float32, copy=False)
    engines = _thread_engines()
    key = (set_name, sampling_rate, os.getpid())  # a forked child inherits the parent's thread locals
    if key not in engines:
        engines[key] = _checked_engine(sampling_rate, set_name, n_features)
    if engines[key] is not None:
        try:
            return engines[key](safe)
        except Exception:  # the engine's state is unknown now: let the public API handle this clip
            engines.pop(key)
    return _public(safe, sampling_rate, set_name)


def _public(signal: np.ndarray, sampling_rate: int, set_name: str) -> np.ndarray:
    return np.asarray(smile(set_name)(signal, sampling_rate), dtype=np.float32).reshape(-1)


class _ReusedEngine:
    """One native openSMILE instance run clip after clip, as ``Smile._extract`` runs one."""

    def __init__(self, sampling_rate: int, set_name: str, n_features: int) -> None:
        from opensmile.core.config import config

        public = smile(set_name)
        self._n_features = n_features
        options = public._options()
        options.update(
            source=os.path.join(public.default_config_root, config.EXTERNAL_INPUT_CONFIG),
            sampleRate=sampling_rate,
            nBits=16,
        )
        self._source = config.EXTERNAL_SOURCE_COMPONENT
        self._sink = config.EXTERNAL_OUTPUT_COMPONENT
        self._native = public._smile(options=options)
        self._used = False

    def __call__(self, signal: np.ndarray) -> np.ndarray:
        if self._used:
            self._native.reset()  # sink callbacks must be registered again after a reset
        self._used = True
        rows: list[np.ndarray] = []
        self._native.external_sink_set_callback_ex(self._sink, lambda data, meta: rows.append(data.copy()))
        pcm = (signal * 32768).astype(np.int16)  # what Smile._extract feeds openSMILE
        self._native.external_audio_source_write_data(self._source, bytes(pcm))
        self._native.external_audio_source_set_eoi(self._source)
        self._native.run()
        if not rows:  # too short to analyse: Smile fills NaN as well
            return np.full(self._n_features, np.nan, dtype=np.float32)
        return np.asarray(rows[0], dtype=np.float32).reshape(-1)


def _thread_engines() -> dict[tuple[str, int, int], _ReusedEngine | None]:
    """This thread's engines by (set, rate, pid); None where the public API is used instead."""
    if not hasattr(_ENGINES, "by_key"):
        _ENGINES.by_key = {}
    return _ENGINES.by_key


def _checked_engine(sampling_rate: int, set_name: str, n_features: int) -> _ReusedEngine | None:
    """A new engine if it reproduces the public API on a probe signal, run twice; else None."""
    probe = np.sin(2 * np.pi * np.cumsum(np.linspace(100, 400, sampling_rate)) / sampling_rate) * 0.3
    probe = probe.astype(np.float32)
    try:
        engine = _ReusedEngine(sampling_rate, set_name, n_features)
        results = [engine(probe), engine(probe[::-1].copy()), engine(probe)]  # the third checks the reset
        expected = [
            _public(probe, sampling_rate, set_name),
            _public(probe[::-1].copy(), sampling_rate, set_name),
        ]
    except Exception:  # opensmile internals may change in any way: then use the public API
        return None
    same = all(
        np.array_equal(a, b, equal_nan=True) for a, b in zip(results, [*expected, expected[0]], strict=True)
    )
    return engine if same else None
