"""Fine-tuning settings and the two presets: the original project's recipe and a faster one."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from components.errors import SerError

PRECISIONS = ("bf16", "fp16", "fp32")
DEVICES = ("auto", "cuda", "cpu")
METRICS = ("weighted_f1", "uar")
# Settings that change where or how fast a run goes, not what it computes: a checkpoint made
# with other values of these can still be resumed.
RUNTIME_FIELDS = ("device", "num_workers", "eval_batch_size", "save_every_steps")


@dataclass(frozen=True)
class FinetuneSettings:
    """Everything a fine-tuning run depends on; the defaults are the ``tuned`` preset.

    Attributes:
        epochs: Passes over the training clips (early stopping may end sooner).
        batch_size: Clips a forward pass.
        lr: Peak AdamW learning rate of the pretrained encoder.
        head_lr: Peak learning rate of the new head (projector, classifier, layer weights); None = ``lr``.
        weight_decay: AdamW decoupled weight decay (not applied to biases and norms).
        warmup_ratio: Share of the optimizer steps spent rising linearly from 0 to the peak;
            the rest decays linearly to 0.
        grad_accum: Batches whose gradients add up to one optimizer step.
        max_grad_norm: Gradient-norm clip; None = off.
        max_dur: Longest clip kept in training and validation, in seconds (the middle is kept).
        precision: ``bf16`` or ``fp16`` autocast on CUDA (fp16 with a gradient scaler); ``fp32``.
            On CPU every run is fp32.
        device: ``auto`` (CUDA when available), ``cuda`` or ``cpu``.
        seed: Fixes batch order, dropout and masking (initialise the head after ``torch.manual_seed``).
        patience: Epochs without a better validation ``metric`` before stopping.
        metric: ``weighted_f1`` or ``uar`` on the validation actors: picks the best epoch.
        num_workers: DataLoader worker processes (0 = collate in the training process).
        eval_batch_size: Clips a forward pass at validation and prediction.
        save_every_steps: Also checkpoint every this many optimizer steps; 0 = at epoch ends only.
        weighted_layer_sum: Model option, see ``build_classifier``.
        freeze_feature_encoder: Model option, see ``build_classifier``.
        gradient_checkpointing: Model option, see ``build_classifier``.
    """

    epochs: int = 15
    batch_size: int = 16
    lr: float = 3e-5
    head_lr: float | None = 5e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0
    max_dur: float | None = 4.0
    precision: str = "bf16"
    device: str = "auto"
    seed: int = 0
    patience: int = 4
    metric: str = "uar"
    num_workers: int = 0
    eval_batch_size: int = 32
    save_every_steps: int = 0
    weighted_layer_sum: bool = True
    freeze_feature_encoder: bool = True
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        for name, allowed in (("precision", PRECISIONS), ("device", DEVICES), ("metric", METRICS)):
            if getattr(self, name) not in allowed:
                raise SerError(
                    f"wav2vec2 {name} is {getattr(self, name)!r}: choose one of {', '.join(allowed)}"
                )
        positive = ("epochs", "batch_size", "grad_accum", "patience", "eval_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise SerError(f"wav2vec2 {name} is {getattr(self, name)}; it must be 1 or more")
        if self.lr <= 0 or (self.head_lr is not None and self.head_lr <= 0):
            raise SerError(
                f"wav2vec2 learning rates must be positive, got lr={self.lr}, head_lr={self.head_lr}"
            )
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise SerError(f"wav2vec2 warmup_ratio is {self.warmup_ratio}; it must be in [0, 1)")
        if self.max_dur is not None and self.max_dur <= 0:
            raise SerError(f"wav2vec2 max_dur is {self.max_dur}; use a positive number of seconds or null")

    def model_options(self) -> dict[str, bool]:
        """The keyword arguments of ``build_classifier`` these settings fix."""
        names = ("weighted_layer_sum", "freeze_feature_encoder", "gradient_checkpointing")
        return {name: getattr(self, name) for name in names}

    def fingerprint(self) -> dict[str, Any]:
        """The settings that decide a run's result (a checkpoint resumes only under the same ones)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in RUNTIME_FIELDS}


PRESETS: dict[str, dict[str, Any]] = {
    # The original project's recipe: batch size 1, fp16, whole model trained, best epoch by weighted F1.
    "original": {
        "epochs": 12,
        "batch_size": 1,
        "lr": 1e-5,
        "head_lr": None,
        "weight_decay": 0.0,
        "warmup_ratio": 0.1,
        "max_dur": None,  # whole clips
        "precision": "fp16",
        "metric": "weighted_f1",
        "patience": 12,  # no early stopping
        "eval_batch_size": 1,
        "weighted_layer_sum": False,
        "freeze_feature_encoder": False,
        "gradient_checkpointing": False,
    },
    # Faster: batches of 16 clips of similar length, bf16 on the GPU, the conv front end frozen.
    "tuned": {
        "epochs": 15,
        "batch_size": 16,
        "lr": 3e-5,
        # The head starts from random weights: at the encoder's 3e-5 the layer weights would
        # barely leave uniform in ~1000 steps, so it learns 10x faster than the 5e-5 often used.
        "head_lr": 5e-4,
        "weight_decay": 0.01,
        "warmup_ratio": 0.1,
        "max_dur": 4.0,  # RAVDESS clips last about 3-5 s with silence at both ends; the middle is kept
        "precision": "bf16",
        "metric": "uar",  # the project's headline metric; not rewarded by the commonest class
        "patience": 4,
        "eval_batch_size": 32,
        "weighted_layer_sum": True,
        "freeze_feature_encoder": True,
        "gradient_checkpointing": False,  # saves memory at a cost in speed; turn on for small GPUs
    },
}


def settings_from(preset: str, overrides: Mapping[str, Any] | None = None) -> FinetuneSettings:
    """A preset's settings with some replaced (e.g. the ``wav2vec2`` block of ``params.yaml``).

    Raises:
        SerError: An unknown preset, an unknown setting or a bad value.
    """
    if preset not in PRESETS:
        raise SerError(f"unknown wav2vec2 preset {preset!r}: choose one of {', '.join(PRESETS)}")
    known = {f.name for f in dataclasses.fields(FinetuneSettings)}
    unknown = sorted(set(overrides or {}) - known)
    if unknown:
        raise SerError(f"unknown wav2vec2 setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return FinetuneSettings(**{**PRESETS[preset], **(overrides or {})})
