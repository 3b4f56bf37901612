"""Fine-tune a wav2vec2 emotion classifier: a plain torch loop that resumes where it stopped.

Labels are class indices: class ``i`` is RAVDESS emotion ``i + 1``. The validation clips come
from the protocol's validation *actors*; they pick the best epoch and stop training early, and
the test fold is never seen here. Speed comes from batching clips of similar length (little
padding), mixed precision on CUDA and, in the ``tuned`` preset, a frozen convolutional front end.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from components.errors import SerError
from components.wav2vec2 import checkpoint as ckpt
from components.wav2vec2.data import (
    Clips,
    Labelled,
    LabelledCollator,
    check_labels,
    data_signature,
    epoch_batches,
)
from components.wav2vec2.inputs import preprocessing_of
from components.wav2vec2.model import crop_length
from components.wav2vec2.predict import (
    predict_logits,
    predict_proba,
    resolve_device,
    score_logits,
)
from components.wav2vec2.run import TrainingRun
from components.wav2vec2.settings import PRESETS, FinetuneSettings, settings_from

__all__ = ["PRESETS", "FinetuneResult", "FinetuneSettings", "finetune", "predict_proba", "settings_from"]

Log = Callable[[int, dict[str, float]], None]


@dataclass
class FinetuneResult:
    """A finished run; the model then holds the weights of ``best_epoch`` (1-based)."""

    best_epoch: int
    best_score: float
    metric: str
    history: dict[str, list[float]] = field(default_factory=dict)  # one value per epoch
    epochs_run: int = 0
    stopped_early: bool = False
    resumed_from: int = 0  # epochs completed before this call (0: a fresh run)
    train_seconds: float = 0.0  # wall time of every epoch with its validation, over all resumes
    samples_per_second: float = 0.0  # training clips per second of the training steps alone
    device: str = "cpu"
    precision: str = "fp32"  # what ran: always fp32 on CPU


def finetune(
    model: nn.Module,
    train: Labelled,
    val: Labelled,
    settings: FinetuneSettings,
    checkpoint_dir: Path | None = None,
    resume: bool = True,
    log: Log | None = None,
) -> FinetuneResult:
    """Fine-tune ``model`` in place; it ends holding its best validation epoch, in eval mode.

    Args:
        model: From ``build_classifier(..., **settings.model_options())``, built after
            ``torch.manual_seed(settings.seed)``.
        train: ``(waves, labels)``: 16 kHz float signals and class indices (emotion code - 1).
        val: The validation actors' clips, same form; they choose the best epoch.
        settings: See :class:`FinetuneSettings`, or ``settings_from(preset, overrides)``.
        checkpoint_dir: Where ``last.pt`` and ``best.pt`` go (format: ``checkpoint``); None = nowhere.
        resume: Continue from ``checkpoint_dir/last.pt`` when it exists (a finished run returns at
            once); False starts afresh and overwrites it.
        log: Called after each epoch's checkpoint with ``(epoch, metrics)``; if it raises, the run
            stops there and a later call with ``resume=True`` goes on from the next epoch.

    Returns:
        The :class:`FinetuneResult`.

    Raises:
        SerError: Empty or mismatched inputs, a checkpoint made with other settings or clips, an
            unreadable checkpoint, or a device or precision this machine lacks.
    """
    n_classes = model.config.num_labels
    y_train, y_val = (
        check_labels(train, n_classes, "training clips"),
        check_labels(val, n_classes, "validation clips"),
    )
    device = resolve_device(settings.device)
    model.to(device)
    run = TrainingRun(model, settings, len(y_train), device)
    fingerprint = {**settings.fingerprint(), "train": data_signature(train[0], y_train)}
    fingerprint["val"] = data_signature(val[0], y_val)
    torch.manual_seed(settings.seed), np.random.seed(settings.seed), random.seed(settings.seed)

    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    saved = ckpt.load(folder / ckpt.LAST) if resume and folder is not None else None
    if saved is not None:
        changed = sorted(k for k in fingerprint if saved["fingerprint"].get(k) != fingerprint[k])
        if changed:
            raise SerError(
                f"{folder / ckpt.LAST} was made with other {', '.join(changed)}; "
                "delete the folder or fine-tune with resume off"
            )
        run.restore(saved)
    state, resumed_from = run.state, run.state["epoch"]
    best_state = None

    def save_last() -> None:
        if folder is not None:
            ckpt.save_atomic(run.snapshot(fingerprint), folder / ckpt.LAST)

    lengths = np.array([crop_length(len(w), settings.max_dur) for w in train[0]])
    collator = LabelledCollator(settings.max_dur, preprocessing_of(model.config))
    dataset = Clips(train[0], y_train)
    while not state["finished"]:
        epoch, started = state["epoch"] + 1, time.perf_counter()
        batches = epoch_batches(lengths, settings.batch_size, settings.seed, epoch)[state["batch_in_epoch"] :]
        loader = DataLoader(
            dataset,
            batch_sampler=batches,
            collate_fn=collator,
            num_workers=settings.num_workers,
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(settings.seed),  # leaves the global generator alone
        )
        run.train_epoch(loader, save_last)
        logits = predict_logits(
            model,
            val[0],
            settings.eval_batch_size,
            device,
            max_dur=settings.max_dur,
            precision=settings.precision,
        )
        metrics = {
            "train_loss": state["train_loss_sum"] / max(1, state["train_seen"]),
            **score_logits(logits, y_val),
        }
        metrics["lr"] = run.optimizer.param_groups[0]["lr"]
        score = metrics[f"val_{settings.metric}"]
        if score > state["best_score"] + 1e-9:
            state.update(best_score=score, best_epoch=epoch, waited=0)
            best_state = ckpt.cpu_state(model)
            if folder is not None:
                best = {"format": ckpt.FORMAT, "model": best_state, "epoch": epoch, "score": score}
                ckpt.save_atomic(best, folder / ckpt.BEST)
        else:
            state["waited"] += 1
        metrics["epoch_seconds"] = time.perf_counter() - started
        state["train_seconds"] += metrics["epoch_seconds"]
        for key, value in metrics.items():
            state["history"].setdefault(key, []).append(float(value))
        state["stopped_early"] = state["waited"] >= settings.patience and epoch < settings.epochs
        state.update(epoch=epoch, batch_in_epoch=0, train_loss_sum=0.0, train_seen=0)
        state["finished"] = epoch >= settings.epochs or state["stopped_early"]
        save_last()
        if log is not None:
            log(epoch, metrics)

    if best_state is None and folder is not None and (best := ckpt.load(folder / ckpt.BEST)) is not None:
        best_state = best["model"]  # the best epoch came before a resume
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return FinetuneResult(
        best_epoch=state["best_epoch"],
        best_score=state["best_score"],
        metric=settings.metric,
        history=state["history"],
        epochs_run=state["epoch"],
        stopped_early=state["stopped_early"],
        resumed_from=resumed_from,
        train_seconds=state["train_seconds"],
        samples_per_second=state["samples_trained"] / max(state["step_seconds"], 1e-9),
        device=str(device),
        precision=settings.precision if run.dtype is not None else "fp32",
    )
