"""Training data for fine-tuning: labelled clips, length-bucketed batches, and their checks."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from components.errors import SerError
from components.wav2vec2.model import batch_inputs

BUCKET_BATCHES = 32  # batches drawn together and sorted by length: little padding, still shuffled
Labelled = tuple[Sequence[np.ndarray], Sequence[int] | np.ndarray]


class Clips(torch.utils.data.Dataset):
    """``(wave, class index)`` pairs, indexed as the waves are."""

    def __init__(self, waves: Sequence[np.ndarray], labels: np.ndarray) -> None:
        self.waves, self.labels = waves, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.waves[index], int(self.labels[index])


class LabelledCollator:
    """``[(wave, label), ...]`` to ``(inputs, mask, labels)``; picklable for workers.

    ``preprocessing`` is the model's (``inputs.preprocessing_of(model.config)``): standardised
    or raw waveforms for the wav2vec2 family, log-mels for Whisper.
    """

    def __init__(self, max_dur: float | None, preprocessing: dict[str, Any] | None = None) -> None:
        self.max_dur = max_dur
        self.preprocessing = preprocessing or {"kind": "waveform", "do_normalize": True}

    def __call__(
        self, items: list[tuple[np.ndarray, int]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        values, mask = batch_inputs(self.preprocessing, [wave for wave, _ in items], self.max_dur)
        return values, mask, torch.tensor([label for _, label in items], dtype=torch.long)


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch: shuffled, sorted by length within buckets, served in shuffled order.

    There are always ``ceil(n / batch_size)`` batches, and the result is a pure function of
    ``(seed, epoch)``: a resumed run draws the same batches as an uninterrupted one.

    Args:
        lengths: Kept length of each clip, in samples.
        batch_size: Clips a batch.
        seed: The run's seed.
        epoch: 1-based epoch.
    """
    rng = np.random.default_rng([seed, epoch])
    order, batches = rng.permutation(len(lengths)), []
    bucket_size = batch_size * BUCKET_BATCHES
    for start in range(0, len(order), bucket_size):
        bucket = order[start : start + bucket_size]
        bucket = bucket[np.argsort(lengths[bucket], kind="stable")]
        batches += [bucket[i : i + batch_size].tolist() for i in range(0, len(bucket), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def check_labels(part: Labelled, n_classes: int, name: str) -> np.ndarray:
    """The labels of ``(waves, labels)`` as int64 class indices, checked against the clips.

    Raises:
        SerError: No clips, a different number of labels, or a label outside ``0..n_classes-1``.
    """
    waves, labels = part
    labels = np.asarray(labels, dtype=np.int64)
    if len(waves) == 0 or len(waves) != len(labels):
        raise SerError(
            f"{name}: need as many labels as clips, at least one (got {len(waves)} and {len(labels)})"
        )
    if labels.min() < 0 or labels.max() >= n_classes:
        raise SerError(f"{name}: labels must be class indices 0..{n_classes - 1} (emotion code - 1)")
    return labels


def data_signature(waves: Sequence[np.ndarray], labels: np.ndarray) -> str:
    """A cheap digest of clip lengths and labels: a checkpoint resumes only on the same clips."""
    digest = hashlib.blake2b(np.asarray([len(w) for w in waves], dtype=np.int64).tobytes(), digest_size=8)
    digest.update(labels.astype(np.int64).tobytes())
    return digest.hexdigest()
