"""Convolutional and convolutional-recurrent nets over log-mel sequences.

Both nets read a standardised log-mel sequence ``[batch, n_mels, n_frames]`` with the mel bins
as channels, so every convolution runs over time (as the original Keras ``Conv1D`` models did),
and, when ``n_stats > 0``, the clip-statistics vector ``[batch, n_stats]`` through a small
dense branch concatenated before the classifier. They return logits; softmax and the loss
belong to the training loop (:mod:`components.models.training`). Any ``n_frames >= 1`` works:
pooling over time is global, so clips of other lengths need no retraining. The channels need
not be mel bins: any sequence set (``components.features.sets.SEQUENCE_SETS``) reads the same.

With ``masked=True`` a frame whose channels are all zero is padding beyond the clip (the
Whisper frame set stores it so, and the classifier keeps it zero after standardisation): it is
left out of the pooling over time and the recurrent layer stops at the clip's last frame.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from components.errors import SerError

RNN_TYPES = ("lstm", "gru")
POOLINGS = ("meanmax", "attention")  # how a sequence becomes one vector: mean ‖ max, or attentive statistics
FIXED_NET_ARGS = ("n_mels", "n_stats", "n_classes", "rnn_type")  # set by the data and the kind, not by params


def frame_mask(sequence: Tensor) -> Tensor:
    """``[B, T]``: True where a frame of ``sequence [B, C, T]`` holds a non-zero value (not padding).

    A clip with no such frame keeps them all, so that pooling never divides by zero.
    """
    mask = sequence.ne(0).any(dim=1)
    return mask | ~mask.any(dim=1, keepdim=True)


def pool_mask(mask: Tensor, pool_size: int) -> Tensor:
    """The mask of the frames ``MaxPool1d(pool_size, ceil_mode=True)`` makes: valid if any input was."""
    return nn.functional.max_pool1d(mask[:, None].float(), pool_size, ceil_mode=True)[:, 0] > 0


def conv_block(
    in_channels: int, out_channels: int, kernel_size: int, pool_size: int, dropout: float
) -> nn.Module:
    """Conv1d over time → BatchNorm → ReLU → MaxPool → Dropout, as in the original project.

    ``ceil_mode`` keeps at least one frame however short the input.
    """
    return nn.Sequential(
        nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
        nn.BatchNorm1d(out_channels),
        nn.ReLU(),
        nn.MaxPool1d(pool_size, ceil_mode=True),
        nn.Dropout(dropout),
    )


class AttentivePool(nn.Module):
    """Attentive statistics pooling (as in ECAPA-TDNN): attention-weighted mean ‖ standard deviation.

    A small scorer weights each frame, so the summary dwells on the voiced, emotional frames
    rather than on the silence and padding that a plain mean averages in.

    Args:
        channels: Channels of the sequence ``[B, channels, T]``.
        hidden: Width of the scorer's hidden layer.
    """

    def __init__(self, channels: int, hidden: int = 64):
        super().__init__()
        self.scorer = nn.Sequential(nn.Conv1d(channels, hidden, 1), nn.Tanh(), nn.Conv1d(hidden, 1, 1))

    def forward(self, maps: Tensor, mask: Tensor | None = None) -> Tensor:
        """``[B, 2 · channels]`` from ``maps [B, channels, T]``, over the frames ``mask [B, T]`` keeps."""
        scores = self.scorer(maps)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None], float("-inf"))
        weights = torch.softmax(scores, dim=2)  # [B, 1, T]
        mean = (weights * maps).sum(dim=2)
        variance = (weights * maps.square()).sum(dim=2) - mean.square()
        return torch.cat([mean, variance.clamp(min=1e-6).sqrt()], dim=1)


def make_pool(pooling: str, channels: int) -> nn.Module | None:
    """The pooling module for ``pooling`` (None for ``meanmax``, which needs no weights)."""
    if pooling not in POOLINGS:
        raise SerError(f"unknown pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
    return AttentivePool(channels) if pooling == "attention" else None


def pool_sequence(maps: Tensor, pool: nn.Module | None, mask: Tensor | None = None) -> Tensor:
    """``[B, 2C]`` from ``maps [B, C, T]``: mean ‖ max over time, or the attentive pool; over the
    frames ``mask [B, T]`` keeps (None: all)."""
    if pool is not None:
        return pool(maps) if mask is None else pool(maps, mask)
    if mask is None:
        return torch.cat([maps.mean(dim=2), maps.amax(dim=2)], dim=1)
    keep = mask[:, None]
    mean = (maps * keep).sum(dim=2) / keep.sum(dim=2)
    return torch.cat([mean, maps.masked_fill(~keep, float("-inf")).amax(dim=2)], dim=1)


class Head(nn.Module):
    """The classifier both nets share: [sequence summary ‖ stats branch] → Dense → ReLU → logits."""

    def __init__(self, n_features: int, n_stats: int, n_classes: int, dense_units: int, dropout: float):
        super().__init__()
        self.stats_branch = nn.Sequential(nn.Linear(n_stats, dense_units), nn.ReLU()) if n_stats > 0 else None
        width = n_features + (dense_units if n_stats > 0 else 0)
        self.classifier = nn.Sequential(
            nn.Linear(width, dense_units), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dense_units, n_classes)
        )

    def forward(self, summary: Tensor, stats: Tensor | None) -> Tensor:
        """Logits ``[batch, n_classes]``; ``stats`` is ignored by a head built with ``n_stats=0``."""
        if self.stats_branch is not None:
            if stats is None:
                raise SerError("this model was built with a clip-statistics branch: pass `stats`")
            summary = torch.cat([summary, self.stats_branch(stats)], dim=1)
        return self.classifier(summary)


class CNN(nn.Module):
    """Two conv blocks over time, global average + max pooling, optional stats branch, dense head.

    Args:
        n_mels: Mel bins of the input (the conv's input channels).
        n_stats: Length of the clip-statistics vector; 0 = no stats branch.
        n_classes: Output logits.
        n_filters: Channels of each conv block.
        kernel_size: Conv kernel length in frames (odd keeps the length).
        dropout: Dropout after each conv block and before the output layer.
        dense_units: Width of the stats branch and of the dense layer.
        pool_size: Max-pooling factor over time of each conv block.
        pooling: ``"meanmax"`` (global mean ‖ max over time) or ``"attention"`` (attentive
            statistics pooling, :class:`AttentivePool`).
        masked: Leave all-zero frames (padding beyond the clip) out of the pooling.
    """

    def __init__(
        self,
        n_mels: int,
        n_stats: int,
        n_classes: int,
        n_filters: int = 128,
        kernel_size: int = 5,
        dropout: float = 0.3,
        dense_units: int = 128,
        pool_size: int = 2,
        pooling: str = "meanmax",
        masked: bool = False,
    ):
        super().__init__()
        self.n_mels, self.n_stats, self.n_classes = n_mels, n_stats, n_classes
        self.pool_size, self.masked = pool_size, masked
        self.features = nn.Sequential(
            conv_block(n_mels, n_filters, kernel_size, pool_size, dropout),
            conv_block(n_filters, n_filters, kernel_size, pool_size, dropout),
        )
        self.pool = make_pool(pooling, n_filters)
        self.head = Head(2 * n_filters, n_stats, n_classes, dense_units, dropout)

    def forward(self, logmel: Tensor, stats: Tensor | None = None) -> Tensor:
        """Logits ``[B, n_classes]`` from ``logmel [B, n_mels, T]`` and ``stats [B, n_stats]`` or None."""
        mask = None
        if self.masked:
            mask = pool_mask(pool_mask(frame_mask(logmel), self.pool_size), self.pool_size)  # two blocks
        return self.head(pool_sequence(self.features(logmel), self.pool, mask), stats)


class CRNN(nn.Module):
    """One conv block, then an LSTM or GRU over time, pooled; same head as the CNN.

    Args:
        n_mels: Mel bins of the input (the conv's input channels).
        n_stats: Length of the clip-statistics vector; 0 = no stats branch.
        n_classes: Output logits.
        rnn_type: ``"lstm"`` or ``"gru"``.
        rnn_hidden: Hidden units of the recurrent layer.
        n_filters: Channels of the conv block.
        kernel_size: Conv kernel length in frames.
        dropout: Dropout after the conv block, after the recurrent layer and before the output layer.
        dense_units: Width of the stats branch and of the dense layer.
        pool_size: Max-pooling factor over time before the recurrent layer; a larger one shortens
            the sequence the (sequential, hence slow on CPU) recurrent layer walks.
        pooling: ``"meanmax"`` (last ‖ mean hidden state, the original's) or ``"attention"``
            (attentive statistics pooling over the hidden states).
        bidirectional: Run the recurrent layer both ways (``rnn_hidden`` units each way).
        masked: Run the recurrent layer over each clip's own frames only (up to its last frame
            that is not all zero) and pool over those.

    Raises:
        SerError: ``rnn_type`` is not one of :data:`RNN_TYPES`.
    """

    def __init__(
        self,
        n_mels: int,
        n_stats: int,
        n_classes: int,
        rnn_type: str = "lstm",
        rnn_hidden: int = 128,
        n_filters: int = 128,
        kernel_size: int = 5,
        dropout: float = 0.3,
        dense_units: int = 128,
        pool_size: int = 4,
        pooling: str = "meanmax",
        bidirectional: bool = False,
        masked: bool = False,
    ):
        super().__init__()
        if rnn_type not in RNN_TYPES:
            raise SerError(f"unknown rnn_type {rnn_type!r}: choose one of {', '.join(RNN_TYPES)}")
        self.n_mels, self.n_stats, self.n_classes = n_mels, n_stats, n_classes
        self.pool_size, self.masked = pool_size, masked
        self.features = conv_block(n_mels, n_filters, kernel_size, pool_size, dropout)
        rnn_class = nn.LSTM if rnn_type == "lstm" else nn.GRU
        self.rnn = rnn_class(n_filters, rnn_hidden, batch_first=True, bidirectional=bidirectional)
        width = rnn_hidden * (2 if bidirectional else 1)
        self.pool = make_pool(pooling, width)
        self.rnn_dropout = nn.Dropout(dropout)
        self.head = Head(2 * width, n_stats, n_classes, dense_units, dropout)

    def forward(self, logmel: Tensor, stats: Tensor | None = None) -> Tensor:
        """Logits ``[B, n_classes]`` from ``logmel [B, n_mels, T]`` and ``stats [B, n_stats]`` or None."""
        sequence = self.features(logmel).transpose(1, 2)  # [B, T', n_filters]: time-major for the RNN
        if self.masked:
            return self.head(self.rnn_dropout(self._masked_summary(sequence, logmel)), stats)
        outputs, _ = self.rnn(sequence)
        if self.pool is None:
            summary = torch.cat([outputs[:, -1], outputs.mean(dim=1)], dim=1)
        else:
            summary = self.pool(outputs.transpose(1, 2))
        return self.head(self.rnn_dropout(summary), stats)

    def _masked_summary(self, sequence: Tensor, logmel: Tensor) -> Tensor:
        """The pooled hidden states of each clip's frames up to its last one that is not padding."""
        mask = pool_mask(frame_mask(logmel), self.pool_size)
        n_steps = mask.shape[1]
        lengths = n_steps - mask.flip(1).long().argmax(dim=1)  # up to the last valid frame
        packed = pack_padded_sequence(sequence, lengths.cpu(), batch_first=True, enforce_sorted=False)
        outputs, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=n_steps)
        valid = torch.arange(n_steps, device=lengths.device)[None] < lengths[:, None]  # [B, T']
        if self.pool is not None:
            return self.pool(outputs.transpose(1, 2), valid)
        last = outputs[torch.arange(len(outputs), device=lengths.device), lengths - 1]
        mean = (outputs * valid[..., None]).sum(dim=1) / lengths[:, None]
        return torch.cat([last, mean], dim=1)


ARCHS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "cnn": (CNN, {}),
    "cnn_lstm": (CRNN, {"rnn_type": "lstm"}),
    "cnn_gru": (CRNN, {"rnn_type": "gru"}),
}


def arch_param_names(arch: str) -> list[str]:
    """The net constructor arguments that ``arch_params`` may set for ``arch``."""
    if arch not in ARCHS:
        raise SerError(f"unknown deep model {arch!r}: choose one of {', '.join(ARCHS)}")
    return [name for name in inspect.signature(ARCHS[arch][0]).parameters if name not in FIXED_NET_ARGS]


def build_net(
    arch: str, n_mels: int, n_stats: int, n_classes: int, arch_params: Mapping[str, Any]
) -> nn.Module:
    """A freshly initialised net of ``arch`` (``"cnn"``, ``"cnn_lstm"`` or ``"cnn_gru"``)."""
    unknown = sorted(set(arch_params) - set(arch_param_names(arch)))
    if unknown:
        raise SerError(
            f"{arch}: unknown parameter(s) {', '.join(unknown)}; it takes {arch_param_names(arch)}"
        )
    net_class, fixed = ARCHS[arch]
    return net_class(n_mels, n_stats, n_classes, **fixed, **arch_params)
