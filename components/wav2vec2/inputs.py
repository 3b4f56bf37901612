"""Each checkpoint's own input preparation: raw waveforms (wav2vec2 family) or log-mels (Whisper).

The settings come from the checkpoint's feature-extractor config (``preprocessor_config.json``):
a wav2vec2-family checkpoint says whether each clip is standardised (``do_normalize``: True for
wav2vec2-base, False for some HuBERT and WavLM checkpoints), a Whisper one its mel bins. They
are read once where the model is loaded and recorded in the model's config under
:data:`CONFIG_KEY`, so they travel with ``save_pretrained`` into a registered model and are read
back from it, never guessed again. A model saved before they were recorded gets the old
behaviour (standardised waveforms), which is what it was trained on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from components.errors import SerError

PREPROCESSOR_FILE = "preprocessor_config.json"
CONFIG_KEY = "ser_preprocessing"  # model-config attribute holding the settings
SAMPLING_RATE = 16_000  # the waveform table's rate; every wav2vec2 and Whisper checkpoint's too
WHISPER_N_FFT, WHISPER_HOP = 400, 160  # the only mel framing components.features.whisper.log_mel makes
WHISPER_STRIDE = 2 * WHISPER_HOP  # samples per encoder frame (conv2 halves the mel frames)
NORM_EPS = 1e-7  # the feature extractors' variance floor


def is_whisper(config: Any) -> bool:
    """Whether a transformers config is a Whisper model's."""
    return getattr(config, "model_type", None) == "whisper"


def read_preprocessing(folder: str | Path, config: Any) -> dict[str, Any]:
    """The input settings of the checkpoint in ``folder`` (its ``preprocessor_config.json``).

    Args:
        folder: A model folder (from ``resolve_pretrained``).
        config: Its transformers config: Whisper gets log-mels, any other model raw waveforms.

    Returns:
        ``{"kind": "waveform", "do_normalize", "sampling_rate"}`` or ``{"kind": "log_mel",
        "do_normalize", "sampling_rate", "n_mels", "max_samples"}``.

    Raises:
        SerError: An unreadable file, a sampling rate other than 16 kHz, or Whisper mel framing
            other than 400-point frames every 160 samples.
    """
    path = Path(folder) / PREPROCESSOR_FILE
    raw: dict[str, Any] = {}
    if path.is_file():
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise SerError(f"{path}: unreadable feature-extractor config ({err})") from None
    rate = int(raw.get("sampling_rate", SAMPLING_RATE))
    if rate != SAMPLING_RATE:
        raise SerError(f"{path}: the checkpoint expects {rate} Hz audio; the pipeline's waveforms are 16 kHz")
    if not is_whisper(config):
        # Wav2Vec2FeatureExtractor's default, and wav2vec2-base's setting
        normalize = bool(raw.get("do_normalize", True))
        return {"kind": "waveform", "do_normalize": normalize, "sampling_rate": rate}
    framing = (int(raw.get("n_fft", WHISPER_N_FFT)), int(raw.get("hop_length", WHISPER_HOP)))
    if framing != (WHISPER_N_FFT, WHISPER_HOP):
        raise SerError(f"{path}: n_fft/hop_length {framing}; only Whisper's 400/160 framing is supported")
    n_mels = int(raw.get("feature_size", config.num_mel_bins))
    if n_mels != config.num_mel_bins:
        raise SerError(f"{path}: feature_size {n_mels}, but the model reads {config.num_mel_bins} mel bins")
    return {
        "kind": "log_mel",
        "do_normalize": bool(raw.get("do_normalize", False)),  # WhisperFeatureExtractor's default
        "sampling_rate": rate,
        "n_mels": n_mels,
        "max_samples": config.max_source_positions * WHISPER_STRIDE,  # the positional table: 30 s
    }


def record(model: Any, folder: str | Path) -> Any:
    """Read ``folder``'s input settings into ``model.config`` (kept when already recorded); returns model."""
    if getattr(model.config, CONFIG_KEY, None) is None:
        setattr(model.config, CONFIG_KEY, read_preprocessing(folder, model.config))
    return model


def preprocessing_of(config: Any) -> dict[str, Any]:
    """The input settings recorded in a model's config; for a model without them, the defaults.

    The defaults are those of a checkpoint without a feature-extractor config: standardised
    waveforms (what models saved before the settings were recorded were trained on), or
    Whisper's log-mels without waveform normalisation.
    """
    recorded = getattr(config, CONFIG_KEY, None)
    if recorded:
        return dict(recorded)
    if is_whisper(config):
        return {
            "kind": "log_mel",
            "do_normalize": False,
            "sampling_rate": SAMPLING_RATE,
            "n_mels": config.num_mel_bins,
            "max_samples": config.max_source_positions * WHISPER_STRIDE,
        }
    return {"kind": "waveform", "do_normalize": True, "sampling_rate": SAMPLING_RATE}


def standardise(clip: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the clip (the feature extractors' ``do_normalize``)."""
    clip = np.asarray(clip, dtype=np.float64)
    return (clip - clip.mean()) / np.sqrt(clip.var() + NORM_EPS)


def whisper_features(clip: np.ndarray, preprocessing: dict[str, Any]) -> tuple[np.ndarray, int]:
    """One clip's Whisper log-mel, over its own length, and how many encoder frames cover the clip.

    As ``components.features.whisper`` encodes its ``own`` window: the clip is zero-padded to a
    whole encoder frame (320 samples), so that its mel frames are even in number and padded
    batches give each clip the encoder output it gets alone.
    """
    from components.features.whisper import log_mel

    clip = standardise(clip) if preprocessing["do_normalize"] else np.asarray(clip, dtype=np.float64)
    n_total = WHISPER_STRIDE * math.ceil(len(clip) / WHISPER_STRIDE)
    padded = np.zeros(n_total, dtype=np.float32)
    padded[: len(clip)] = clip
    n_valid = math.ceil(math.ceil(len(clip) / WHISPER_HOP) / 2)  # output frames that start in the clip
    return log_mel(padded, preprocessing["n_mels"]), n_valid
