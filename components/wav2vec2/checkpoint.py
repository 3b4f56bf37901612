"""Resumable fine-tuning checkpoints, written atomically.

A checkpoint folder holds two files, each replaced in one ``os.replace`` (a crash mid-write
leaves the previous file intact):

- ``last.pt``: everything to continue: ``format``, ``fingerprint`` (the settings that decide the
  result), ``model``, ``optimizer``, ``scheduler`` and ``scaler`` state dicts, ``epoch`` (epochs
  completed), ``batch_in_epoch`` (batches of the next epoch already trained, for step
  checkpoints), ``step`` (optimizer steps), ``train_loss_sum``/``train_seen`` of the epoch under
  way, ``best_score``, ``best_epoch``, ``waited`` (epochs without improvement), ``finished``,
  ``history``, ``train_seconds``, ``step_seconds``, ``samples_trained`` and ``rng`` (torch CPU and
  CUDA, numpy and Python generator states).
- ``best.pt``: ``model`` (the state dict of the best epoch so far), ``epoch`` and ``score``.

Both load with ``torch.load(path, weights_only=True)``: only tensors and plain Python values.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from components.errors import SerError

FORMAT = 1
LAST = "last.pt"
BEST = "best.pt"


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def load(path: Path) -> dict[str, Any] | None:
    """A checkpoint file's contents, or None when there is none.

    Raises:
        SerError: The file exists but cannot be read (truncated, or not a checkpoint).
    """
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and torch errors alike
        raise SerError(
            f"{path}: unreadable checkpoint ({type(err).__name__}); delete it or fine-tune with resume off"
        ) from None
    if not isinstance(state, dict) or state.get("format", FORMAT) != FORMAT:
        raise SerError(f"{path}: not a wav2vec2 fine-tuning checkpoint of format {FORMAT}; delete it")
    return state


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a module's state dict (safe to keep while training goes on)."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in module.state_dict().items()}


def rng_state() -> dict[str, Any]:
    """The state of every generator training draws from (dropout, SpecAugment masks, layer drop)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generators saved by :func:`rng_state` (CUDA ones only when the device count matches)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    random.setstate(_as_tuple(state["python"]))


def _as_tuple(value: Any) -> Any:
    """Python's generator state is nested tuples; make sure it comes back as tuples."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value
