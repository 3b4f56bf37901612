"""Batch prediction with a wav2vec2 classifier; the device and precision choices training shares."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from components.errors import SerError
from components.evaluation.metrics import compute_metrics
from components.wav2vec2.inputs import preprocessing_of
from components.wav2vec2.model import batch_inputs, conv_sees_padding, crop_length, length_batches

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` is CUDA when available, else CPU.

    Raises:
        SerError: ``cuda`` asked for on a machine without a CUDA GPU.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise SerError("wav2vec2 device is cuda but torch sees no CUDA GPU; set device to auto or cpu")
    return resolved


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype of a precision on a device: None (fp32) on CPU and for ``fp32``.

    Raises:
        SerError: ``bf16`` on a GPU that has no bfloat16.
    """
    if device.type != "cuda":
        return None
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise SerError("this GPU has no bfloat16; set wav2vec2.precision to fp16")
    return AUTOCAST_DTYPES[precision]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA when ``dtype`` is set; otherwise nothing."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def predict_logits(
    model: nn.Module,
    waves: Sequence[np.ndarray],
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    *,
    max_dur: float | None = None,
    precision: str = "fp32",
    exact: bool | None = None,
) -> torch.Tensor:
    """Logits ``[n, n_classes]`` (float32, CPU, input order) in eval mode; the model moves to ``device``.

    Clips are batched by length to pad little. ``exact`` (default: when the model's feature
    encoder normalises over time, as wav2vec2-base's does) batches only equal-length clips, so
    a clip's logits do not depend on which clips share its batch.
    """
    device = resolve_device(device)
    dtype = autocast_dtype(device, precision)
    model.to(device).eval()
    exact = conv_sees_padding(model.config) if exact is None else exact
    lengths = [crop_length(len(wave), max_dur) for wave in waves]
    preprocessing = preprocessing_of(model.config)  # the checkpoint's, recorded when it was built
    out = torch.empty(len(waves), model.config.num_labels)
    with torch.inference_mode():
        for batch in length_batches(lengths, batch_size, equal_only=exact):
            values, mask = batch_inputs(preprocessing, [waves[i] for i in batch], max_dur)
            with autocast(device, dtype):
                logits = model(values.to(device), attention_mask=mask.to(device)).logits
            out[batch] = logits.float().cpu()
    return out


def predict_proba(
    model: nn.Module,
    waves: Sequence[np.ndarray],
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    *,
    max_dur: float | None = None,
    precision: str = "fp32",
) -> np.ndarray:
    """Class probabilities ``[n, n_classes]`` (float32, input order); class ``i`` is emotion ``i + 1``.

    Args:
        model: A classifier from ``build_classifier`` (fine-tuned).
        waves: 16 kHz mono float signals.
        batch_size: Most clips a forward pass.
        device: ``auto``, ``cpu``, ``cuda``; the model moves there.
        max_dur: Keep the middle ``max_dur`` seconds of longer clips; None = whole clips.
        precision: ``bf16``/``fp16`` autocast on CUDA, else fp32.
    """
    logits = predict_logits(model, waves, batch_size, device, max_dur=max_dur, precision=precision)
    return torch.softmax(logits, dim=1).numpy().astype(np.float32)


def score_logits(logits: torch.Tensor, labels: np.ndarray) -> dict[str, float]:
    """Validation metrics of logits against class indices: loss, accuracy, UAR, macro and weighted F1."""
    target = torch.as_tensor(labels, dtype=torch.long)
    predicted = logits.argmax(dim=1).numpy()
    scores = compute_metrics(labels + 1, predicted + 1)  # class i is emotion code i + 1
    return {
        "val_loss": float(nn.functional.cross_entropy(logits, target)),
        **{f"val_{name}": scores[name] for name in ("accuracy", "uar", "macro_f1", "weighted_f1")},
    }
