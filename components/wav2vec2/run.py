"""The moving parts of one fine-tuning run: optimizer, schedule, scaler, progress, one epoch's steps."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from components.wav2vec2 import checkpoint as ckpt
from components.wav2vec2.model import head_parameter_names
from components.wav2vec2.predict import autocast, autocast_dtype
from components.wav2vec2.settings import FinetuneSettings


def fresh_state() -> dict[str, Any]:
    """Progress of a run that has not started."""
    return {
        **{"epoch": 0, "batch_in_epoch": 0, "step": 0, "train_loss_sum": 0.0, "train_seen": 0},
        **{"best_score": -math.inf, "best_epoch": 0, "waited": 0, "finished": False, "stopped_early": False},
        **{"history": {}, "train_seconds": 0.0, "step_seconds": 0.0, "samples_trained": 0},
    }


class TrainingRun:
    """One run's optimizer, warm-up/decay schedule, gradient scaler and progress ``state``.

    ``state`` holds the progress keys of a checkpoint (see ``checkpoint``); :meth:`snapshot` and
    :meth:`restore` write and read a whole ``last.pt`` dictionary.
    """

    def __init__(self, model: nn.Module, settings: FinetuneSettings, n_train: int, device: torch.device):
        self.model, self.settings, self.device = model, settings, device
        self.dtype = autocast_dtype(device, settings.precision)
        self.params = [p for p in model.parameters() if p.requires_grad]
        head, groups = head_parameter_names(model), {}
        for name, param in model.named_parameters():
            if param.requires_grad:  # no decay on biases and norms; the new head learns at head_lr
                groups.setdefault((name in head, param.ndim >= 2), []).append(param)
        lrs = {False: settings.lr, True: settings.head_lr or settings.lr}
        self.optimizer = torch.optim.AdamW(
            [
                {"params": params, "lr": lrs[is_head], "weight_decay": settings.weight_decay * decays}
                for (is_head, decays), params in sorted(groups.items())
            ]
        )
        self.n_batches = math.ceil(n_train / settings.batch_size)
        total = settings.epochs * math.ceil(self.n_batches / settings.grad_accum)
        warmup = round(settings.warmup_ratio * total)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda step: (
                (step + 1) / (warmup + 1)
                if step < warmup
                else max(0.0, (total - step) / max(1, total - warmup))
            ),
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.state = fresh_state()

    def modules(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "scaler": self.scaler,
        }

    def restore(self, saved: dict[str, Any]) -> None:
        for name, module in self.modules().items():
            module.load_state_dict(saved[name])
        ckpt.set_rng_state(saved["rng"])
        self.state = {key: saved[key] for key in self.state}

    def snapshot(self, fingerprint: dict[str, Any]) -> dict[str, Any]:
        parts = {name: module.state_dict() for name, module in self.modules().items()}
        return {
            "format": ckpt.FORMAT,
            "fingerprint": fingerprint,
            **parts,
            **self.state,
            "rng": ckpt.rng_state(),
        }

    def train_epoch(self, loader: DataLoader, save: Callable[[], None]) -> None:
        """Train the batches ``loader`` serves (the rest of an epoch when resuming mid-epoch)."""
        settings, state, device = self.settings, self.state, self.device
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, started = torch.zeros((), device=device), time.perf_counter()
        for index, (values, mask, target) in enumerate(loader, start=state["batch_in_epoch"]):
            first = index // settings.grad_accum * settings.grad_accum
            group = min(settings.grad_accum, self.n_batches - first)  # batches in this optimizer step
            with autocast(device, self.dtype):
                logits = self.model(values.to(device), attention_mask=mask.to(device)).logits
            loss = nn.functional.cross_entropy(logits.float(), target.to(device))
            self.scaler.scale(loss / group).backward()
            loss_sum += loss.detach() * len(target)
            state["train_seen"] += len(target)
            state["samples_trained"] += len(target)
            if index + 1 < first + group:
                continue
            if settings.max_grad_norm is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.params, settings.max_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            every = settings.save_every_steps
            if every and state["step"] % every == 0 and index + 1 < self.n_batches:  # not at the epoch's end
                state["train_loss_sum"] += float(loss_sum)
                loss_sum.zero_()
                state["step_seconds"] += time.perf_counter() - started
                state["batch_in_epoch"] = index + 1
                save()
                started = time.perf_counter()
        state["train_loss_sum"] += float(loss_sum)  # float() waits for the GPU, so the timing is honest
        state["step_seconds"] += time.perf_counter() - started
