"""The one training loop every torch model shares: AdamW, plateau LR, early stopping, best-state restore.

The loop knows nothing of architectures: any ``nn.Module`` whose ``forward(logmel, stats)``
returns logits trains here. Inputs are already standardised tensors (:class:`TensorData`);
labels are class indices ``0..n_classes-1``. On CPU a seed fixes the result: initialise the
model after :func:`torch.manual_seed` and pass the same ``seed`` here.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from components.errors import SerError

MONITORS = ("recall", "loss")
EVAL_BATCH_SIZE = 256  # no gradients at evaluation, so larger batches cost little memory

Augment = Callable[[Tensor, torch.Generator], Tensor]
Log = Callable[[int, dict[str, float]], None]


@dataclass
class TensorData:
    """One split: ``logmel [n, n_mels, T]`` float32, ``stats [n, n_stats]`` or None, ``y [n]`` int64."""

    logmel: Tensor
    stats: Tensor | None
    y: Tensor

    def __post_init__(self) -> None:
        sizes = {len(self.logmel), len(self.y)} | ({len(self.stats)} if self.stats is not None else set())
        if len(sizes) != 1:
            raise SerError(f"logmel, stats and y hold different numbers of clips: {sorted(sizes)}")
        if self.logmel.ndim != 3:
            raise SerError(
                f"logmel must be [n_clips, n_mels, n_frames], got shape {tuple(self.logmel.shape)}"
            )

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class TrainResult:
    """What a run did: per-epoch ``history``, the restored ``best_epoch`` (1-based) and timing."""

    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0
    best_score: float = float("nan")
    epochs_run: int = 0
    stopped_early: bool = False
    train_seconds: float = 0.0


class SpecAugment:
    """SpecAugment-style masking, plus optional mel-axis shifts and time stretches.

    Masks set ``n_masks`` frequency and time bands per clip to 0 (the mean). A mel shift moves
    each clip's spectrum up or down by up to ``freq_shift`` bins (edge bins repeated), a cheap
    stand-in for pitch and vocal-tract-length perturbation; a time stretch resamples the whole
    batch's time axis by a factor within ``1 ± time_stretch`` (cut or edge-padded back to its
    length), a stand-in for speed perturbation.

    Args:
        freq_mask: Widest frequency band masked, in mel bins.
        time_mask: Widest time band masked, in frames.
        n_masks: Bands of each kind per clip.
        freq_shift: Largest mel-bin shift per clip; 0 = off.
        time_stretch: Largest relative change of the batch's duration; 0 = off.
    """

    def __init__(
        self,
        freq_mask: int = 8,
        time_mask: int = 20,
        n_masks: int = 1,
        freq_shift: int = 0,
        time_stretch: float = 0.0,
    ):
        self.freq_mask, self.time_mask, self.n_masks = freq_mask, time_mask, n_masks
        self.freq_shift, self.time_stretch = freq_shift, time_stretch

    def __call__(self, logmel: Tensor, generator: torch.Generator) -> Tensor:
        """An augmented copy of a standardised batch ``[B, n_mels, T]``."""
        out = logmel.clone()
        if self.time_stretch > 0:
            out = stretch_time(
                out, 1 + (2 * torch.rand(1, generator=generator).item() - 1) * self.time_stretch
            )
        if self.freq_shift > 0:
            out = shift_mels(
                out, torch.randint(-self.freq_shift, self.freq_shift + 1, (len(out),), generator=generator)
            )
        batch, n_mels, n_frames = out.shape
        for axis, size, widest in ((1, n_mels, self.freq_mask), (2, n_frames, self.time_mask)):
            for _ in range(self.n_masks):
                width = torch.randint(0, min(widest, size) + 1, (batch, 1), generator=generator)
                start = (torch.rand((batch, 1), generator=generator) * (size - width + 1)).long()
                index = torch.arange(size)[None]
                band = (index >= start) & (index < start + width)  # [B, size]
                out.masked_fill_(band[:, :, None] if axis == 1 else band[:, None, :], 0.0)
        return out


def shift_mels(logmel: Tensor, shifts: Tensor) -> Tensor:
    """Each clip's mel axis moved by its own shift (positive = up), edge bins repeated."""
    n_mels = logmel.shape[1]
    source = (torch.arange(n_mels)[None] - shifts[:, None]).clamp(0, n_mels - 1)  # [B, n_mels]
    return torch.gather(logmel, 1, source[:, :, None].expand(-1, -1, logmel.shape[2]))


def stretch_time(logmel: Tensor, factor: float) -> Tensor:
    """The batch resampled to ``factor`` times its length (linear), then cut or edge-padded back."""
    n_frames = logmel.shape[2]
    stretched = nn.functional.interpolate(
        logmel, size=max(1, round(n_frames * factor)), mode="linear", align_corners=False
    )
    if stretched.shape[2] >= n_frames:
        return stretched[:, :, :n_frames].contiguous()
    return nn.functional.pad(stretched, (0, n_frames - stretched.shape[2]), mode="replicate")


def predict_logits(model: nn.Module, data: TensorData, device: str = "cpu") -> Tensor:
    """Logits ``[n, n_classes]`` on CPU, in eval mode, batch by batch."""
    model.eval()
    chunks = []
    with torch.no_grad():
        for start in range(0, len(data), EVAL_BATCH_SIZE):
            part = slice(start, start + EVAL_BATCH_SIZE)
            stats = data.stats[part].to(device) if data.stats is not None else None
            chunks.append(model(data.logmel[part].to(device), stats).float().cpu())
    return torch.cat(chunks) if chunks else torch.empty(0, 0)


def macro_recall(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``y_true`` (= balanced accuracy)."""
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]))


def class_weights(y: Tensor, n_classes: int) -> Tensor:
    """``n / (n_classes_present · count)`` per class, 0 for classes absent from ``y``."""
    counts = torch.bincount(y, minlength=n_classes).float()
    present = counts > 0
    weights = torch.zeros(n_classes)
    weights[present] = len(y) / (present.sum() * counts[present])
    return weights


def train_torch(
    model: nn.Module,
    train: TensorData,
    val: TensorData,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    patience: int,
    lr_patience: int,
    lr_factor: float,
    seed: int,
    device: str = "cpu",
    augment: Augment | None = None,
    log: Log | None = None,
    class_weighted: bool = True,
    monitor: str = "recall",
    max_grad_norm: float | None = 5.0,
    mixup: float = 0.0,
) -> TrainResult:
    """Train ``model`` in place and restore its best validation state.

    Args:
        model: Any module with ``forward(logmel, stats) -> logits``.
        train: Training clips.
        val: Validation clips (normally held-out actors); drives early stopping and the LR schedule.
        epochs: Most epochs to run.
        batch_size: Training batch size.
        lr: AdamW's initial learning rate.
        weight_decay: AdamW's decoupled weight decay.
        patience: Epochs without a better ``monitor`` value before stopping.
        lr_patience: Epochs without a lower validation loss before the LR is multiplied by ``lr_factor``.
        lr_factor: LR reduction factor on a plateau.
        seed: Fixes batch order, dropout and augmentation.
        device: ``"cpu"`` or a CUDA device; the model ends on this device.
        augment: Called on each standardised training batch, e.g. :class:`SpecAugment`; None = off.
        log: Called after each epoch with ``(epoch, metrics)`` (e.g. to log to MLflow).
        class_weighted: Weight the cross-entropy by inverse class frequency in ``train``.
        monitor: ``"recall"`` (validation macro recall, higher is better) or ``"loss"`` (lower is better).
        max_grad_norm: Gradient-norm clip, which keeps the recurrent layers stable; None = off.
        mixup: Beta(α, α) parameter of mixup (each batch blended with a shuffled copy of itself,
            inputs and targets alike); 0 = off.

    Returns:
        The run's :class:`TrainResult`; the model holds the weights of ``best_epoch``.

    Raises:
        SerError: A bad ``monitor``, an empty split, or ``epochs < 1``.
    """
    if monitor not in MONITORS:
        raise SerError(f"unknown monitor {monitor!r}: choose one of {', '.join(MONITORS)}")
    if len(train) == 0 or len(val) == 0 or epochs < 1:
        raise SerError(
            f"nothing to train: {len(train)} training, {len(val)} validation clips, {epochs} epochs"
        )
    if mixup < 0:
        raise SerError(f"mixup must be 0 (off) or a positive Beta parameter, got {mixup}")
    torch.manual_seed(seed)  # dropout
    generator = torch.Generator().manual_seed(seed)  # batch order and augmentation
    mixing = np.random.default_rng(seed)  # mixup's blend weights (torch's Beta takes no generator)
    model.to(device)
    n_classes = int(getattr(model, "n_classes", int(max(train.y.max(), val.y.max())) + 1))
    weights = class_weights(train.y, n_classes).to(device) if class_weighted else None
    criterion = nn.CrossEntropyLoss(weight=weights)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=lr_factor, patience=lr_patience)
    sign = 1.0 if monitor == "recall" else -1.0  # compare scores as "higher is better"
    result = TrainResult(
        history={k: [] for k in ("train_loss", "val_loss", "val_recall", "val_accuracy", "lr")}
    )
    best_state, best, waited = copy.deepcopy(model.state_dict()), -float("inf"), 0
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        total, order = 0.0, torch.randperm(len(train), generator=generator)
        for start in range(0, len(train), batch_size):
            idx = order[start : start + batch_size]
            logmel = train.logmel[idx]
            if augment is not None:
                logmel = augment(logmel, generator)
            stats = train.stats[idx] if train.stats is not None else None
            targets = train.y[idx].to(device)
            if mixup > 0:
                weight, partner = (
                    float(mixing.beta(mixup, mixup)),
                    torch.randperm(len(idx), generator=generator),
                )
                logmel = weight * logmel + (1 - weight) * logmel[partner]
                stats = None if stats is None else weight * stats + (1 - weight) * stats[partner]
            stats = None if stats is None else stats.to(device)
            logits = model(logmel.to(device), stats)
            loss = criterion(logits, targets)
            if mixup > 0:
                loss = weight * loss + (1 - weight) * criterion(logits, targets[partner.to(device)])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            total += loss.item() * len(idx)
        logits = predict_logits(model, val, device)
        val_loss = float(
            nn.functional.cross_entropy(logits, val.y, weight=None if weights is None else weights.cpu())
        )
        y_pred = logits.argmax(dim=1).numpy()
        metrics = {
            "train_loss": total / len(train),
            "val_loss": val_loss,
            "val_recall": macro_recall(val.y.numpy(), y_pred),
            "val_accuracy": float(np.mean(y_pred == val.y.numpy())),
            "lr": optimizer.param_groups[0]["lr"],
        }
        for key, value in metrics.items():
            result.history[key].append(value)
        if log is not None:
            log(epoch, metrics)
        scheduler.step(val_loss)
        score = sign * metrics["val_recall" if monitor == "recall" else "val_loss"]
        if score > best + 1e-9:
            best, waited, result.best_epoch = score, 0, epoch
            best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
        result.epochs_run = epoch
        if waited >= patience:
            result.stopped_early = epoch < epochs
            break
    model.load_state_dict(best_state)
    model.eval()
    result.best_score = sign * best
    result.train_seconds = time.perf_counter() - started
    return result
