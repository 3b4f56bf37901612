"""Speaker normalisation: remove each speaker's own level and spread from their features.

Voices differ in pitch, loudness and timbre more than one voice differs between emotions, so a
speaker-independent model does better on features relative to the speaker's own average. The
statistics come from the speaker's clips themselves, with no labels, so the same step is
allowed on test speakers (it is unsupervised, transductive adaptation).
"""

from __future__ import annotations

import numpy as np

from components.errors import SerError

MIN_STD = 1e-8  # floor for a column's spread: a constant column becomes 0, not NaN or inf


def speakers_with_enough_clips(ids: np.ndarray, min_clips: int) -> np.ndarray:
    """The distinct speaker ids, sorted; SerError naming those with fewer than ``min_clips`` clips."""
    speaker_ids, counts = np.unique(ids, return_counts=True)
    too_few = speaker_ids[counts < min_clips]
    if len(too_few):
        raise SerError(
            f"speaker(s) {too_few.tolist()} have fewer than {min_clips} clips: per-speaker statistics "
            "need several clips of each speaker"
        )
    return speaker_ids


def normalize_per_speaker(
    features: np.ndarray, speakers: np.ndarray, min_clips: int = 2, min_std: float = MIN_STD
) -> np.ndarray:
    """Z-score each speaker's rows with that speaker's own mean and standard deviation.

    Only the features and the speaker ids are used, never an emotion label, so no label
    leaks from test clips. The catch is at prediction time: a new speaker must bring several
    clips (ideally spanning several emotions) before their statistics mean anything; a single
    clip would normalise to all zeros, which is why fewer than ``min_clips`` clips is an error.

    Args:
        features: ``(n_clips, n_features)`` finite values (a 1-D array counts as one feature).
        speakers: ``(n_clips,)`` speaker ids, for example the ``actor`` column.
        min_clips: The fewest clips a speaker may have.
        min_std: Floor of the per-speaker standard deviation (population, ``ddof=0``); a
            column constant for a speaker becomes 0 for that speaker.

    Returns:
        An array of the input's shape (float64, or the input's float dtype) in which each
        speaker's rows have mean 0 and standard deviation 1 in every non-constant column.

    Raises:
        SerError: Shapes disagree, values are not finite, or a speaker has too few clips.
    """
    values = np.asarray(features)
    ids = np.asarray(speakers).ravel()
    matrix = values.reshape(len(values), -1) if values.ndim == 1 else values
    if matrix.ndim != 2 or len(matrix) != len(ids):
        raise SerError(f"features of shape {values.shape} need one row per speaker id ({len(ids)} ids given)")
    if not np.isfinite(matrix).all():
        bad = int((~np.isfinite(matrix)).any(axis=1).sum())
        raise SerError(f"{bad} clip(s) have NaN or infinite features; fix or impute them before normalising")
    dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.dtype(np.float64)
    out = np.empty(matrix.shape, dtype=np.float64)
    speaker_ids = speakers_with_enough_clips(ids, min_clips)
    for speaker in speaker_ids:
        rows = ids == speaker
        block = matrix[rows].astype(np.float64)
        mean = block.mean(axis=0)
        std = np.maximum(block.std(axis=0), min_std)
        out[rows] = (block - mean) / std
    return out.reshape(values.shape).astype(dtype, copy=False)


def normalize_sequences_per_speaker(
    sequences: np.ndarray, speakers: np.ndarray, min_clips: int = 2, min_std: float = MIN_STD
) -> np.ndarray:
    """Z-score each speaker's frame sequences per channel, over the frames that are not padding.

    A padding frame has every channel exactly zero (the rule of ``components.models.nets``'s
    frame mask); it neither counts in the statistics nor changes, so a masked net still sees
    where each clip ends. Like :func:`normalize_per_speaker` this uses no labels, and the
    statistics are computed one speaker at a time in float32 (sums in float64), so a large
    float16 set never gets a full-size float64 copy.

    Args:
        sequences: ``(n_clips, n_channels, n_frames)`` finite values.
        speakers: ``(n_clips,)`` speaker ids, for example the ``actor`` column.
        min_clips: The fewest clips a speaker may have.
        min_std: Floor of a channel's per-speaker standard deviation (population); a channel
            constant over a speaker's frames becomes 0 in them.

    Returns:
        An array of the input's shape and float dtype (float64 for other dtypes) in which each
        speaker's non-padding frames have channel mean 0 and standard deviation 1, and padding
        frames are still all zero. A frame that was not padding stays non-zero unless every one
        of its channels equals the speaker's mean (in practice only for a constant speaker).

    Raises:
        SerError: Shapes disagree, values are not finite, a speaker has too few clips, or all
            of a speaker's frames are padding.
    """
    values = np.asarray(sequences)
    ids = np.asarray(speakers).ravel()
    if values.ndim != 3 or len(values) != len(ids):
        raise SerError(
            f"sequences of shape {values.shape} need to be (n_clips, n_channels, n_frames) "
            f"with one clip per speaker id ({len(ids)} ids given)"
        )
    speaker_ids = speakers_with_enough_clips(ids, min_clips)
    dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.dtype(np.float64)
    out = np.empty(values.shape, dtype=dtype)
    for speaker in speaker_ids:
        rows = np.flatnonzero(ids == speaker)
        block = values[rows].astype(np.float32)
        if not np.isfinite(block).all():
            bad = int((~np.isfinite(block)).any(axis=(1, 2)).sum())
            raise SerError(
                f"{bad} clip(s) of speaker {speaker} have NaN or infinite frames; fix them before normalising"
            )
        keep = block.any(axis=1, keepdims=True)  # [k, 1, T]: the frames that are not padding
        count = int(keep.sum())
        if count == 0:
            raise SerError(f"speaker {speaker}: every frame of every clip is all zero (padding only)")
        mean = block.sum(axis=(0, 2), dtype=np.float64) / count  # padding frames add zeros
        block -= mean.astype(np.float32)[None, :, None]
        block *= keep
        std = np.sqrt(np.square(block).sum(axis=(0, 2), dtype=np.float64) / count)
        block /= np.maximum(std, min_std).astype(np.float32)[None, :, None]
        out[rows] = block
    return out
