"""Whisper tiny.en's middle layers frame by frame: the ``whisper_tiny_en_frames`` sequence set.

The sequence the deep models (``cnn``, ``cnn_lstm``, ``cnn_gru``) may read instead of the log-mel
spectrogram (their ``sequence`` setting). Each clip is cut to ``clip_dur`` seconds and encoded
alone, at its own length, by the same converted tiny.en encoder as ``whisper_tiny_en_layers``
(:mod:`components.features.whisper_layers`: pinned weights, float32, one thread); the
``featurize.whisper_layers`` hidden states are stacked as channels (384 a layer), pairs of
Whisper's 20 ms frames are averaged to 25 frames a second, and the sequence is zero-padded to
``clip_dur`` (100 frames for 4 s), so every row has the same shape ``(channels, n_frames)`` and
the log-mel table layout holds it. Values are stored as float16, as log-mel is: half the bytes
(1248 clips x 768 x 100 is 190 MB, 380 MB once read as float32); hidden states of these layers
stay within a few hundred, far inside float16's range, and its 3 significant digits are well
below what a model can use.
"""

from __future__ import annotations

import math

import numpy as np

from components.features import whisper_layers as layers_set  # its parameter name shadows the module

PARAMS: tuple[str, ...] = ("clip_dur", "whisper_layers")  # settings of the set (clip_dur: preprocess)
DTYPE = np.dtype("<f2")
FRAME_RATE = 25  # frames a second: Whisper's 50 averaged in pairs
_POOLED = 2  # Whisper frames averaged into one


def output_shape(
    sampling_rate: int, *, clip_dur: float = 4.0, whisper_layers: list[int] | tuple[int, ...] = (2, 3)
) -> tuple[int, int]:
    """``(channels, n_frames)`` of every array :func:`extract` returns: 384 channels a layer."""
    del sampling_rate  # accepted as logmel.output_shape takes it: the frame rate is Whisper's
    return len(layers_set.check_layers(whisper_layers)) * layers_set.width(), round(clip_dur * FRAME_RATE)


def extract(
    signal: np.ndarray,
    sampling_rate: int,
    *,
    clip_dur: float = 4.0,
    whisper_layers: list[int] | tuple[int, ...] = (2, 3),
) -> np.ndarray:
    """The clip's first ``clip_dur`` seconds as Whisper frames, 25 a second, zero beyond the clip.

    Args:
        signal: Mono float32 signal at its natural length.
        sampling_rate: Its rate in Hz.
        clip_dur: Length of the sequence in seconds (the clip is cut to it before encoding).
        whisper_layers: Hidden states stacked as channels, 0 (input embedding) to the last block.

    Returns:
        float16 array of shape :func:`output_shape`: channels are layer by layer, 384 each.

    Raises:
        SerError: An unknown layer, or an empty signal.
    """
    layers = layers_set.check_layers(whisper_layers)
    n_channels, n_total = output_shape(sampling_rate, clip_dur=clip_dur, whisper_layers=layers)
    clip = np.asarray(signal)[: round(clip_dur * sampling_rate)]
    states = layers_set.hidden_states(clip, sampling_rate, layers).astype(np.float64)
    n_pairs = math.ceil(len(states) / _POOLED)
    padded = np.zeros((n_pairs * _POOLED, n_channels))
    padded[: len(states)] = states
    counts = np.minimum(_POOLED, len(states) - _POOLED * np.arange(n_pairs))  # the last pair may be one frame
    pooled = padded.reshape(n_pairs, _POOLED, n_channels).sum(axis=1) / counts[:, None]
    out = np.zeros((n_channels, n_total), dtype=DTYPE)
    kept = min(n_pairs, n_total)
    out[:, :kept] = pooled[:kept].T
    return out
