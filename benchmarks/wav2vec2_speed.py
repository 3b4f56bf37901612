"""Speed of the wav2vec2 paths: frozen embeddings and fine-tuning steps, on the CPU and on a GPU.

Models are randomly initialised, so nothing is downloaded: the tiny test checkpoint, and a
base-sized one (``Wav2Vec2Config()`` defaults are wav2vec2-base's shape: 12 layers of 768, a
group-norm convolutional front end), which costs the same per step as the real weights.
Every clip is 4 s of noise at 16 kHz, the ``tuned`` preset's ``max_dur``. Training steps run
through the real step code (``TrainingRun.train_epoch``: autocast, scaler, clipping, schedule).

- CPU (always): embedding throughput and training step time.
- ``--gpu``: training throughput of the base-sized model with bf16 autocast at batch sizes 8,
  16 and 32, frozen and trainable front end, against the original recipe (batch 1, fp16, whole
  model trained), with peak GPU memory.

Writes ``reports/wav2vec2_speed.md`` and prints it.

Usage: ``python benchmarks/wav2vec2_speed.py [--gpu] [--threads N]``
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import add_common_args, write_report

CLIP_DUR = 4.0
SAMPLING_RATE = 16_000
# (label, batch size, precision, frozen front end, weighted layer sum, gradient checkpointing)
GPU_ROWS = [
    ("original recipe", 1, "fp16", False, False, False),
    *[(f"tuned, batch {b}", b, "bf16", True, True, False) for b in (8, 16, 32)],
    *[(f"tuned, front end trained, batch {b}", b, "bf16", False, True, False) for b in (8, 16, 32)],
    ("tuned, batch 32, checkpointing", 32, "bf16", True, True, True),
    ("tuned in fp32, batch 16", 16, "fp32", True, True, False),
]


def clips(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(CLIP_DUR * SAMPLING_RATE))).astype(np.float32) for _ in range(n)]


def base_config():
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config()  # wav2vec2-base's shape; mask_time_prob 0.05 as in fine-tuning


def embed_rate(encoder, n_clips: int, batch_size: int, device: str = "cpu") -> float:
    """Clips per second of ``extract_embeddings`` (one warm-up batch first)."""
    from components.wav2vec2.embed import extract_embeddings

    extract_embeddings(encoder, clips(1), batch_size=1, device=device)
    started = time.perf_counter()
    extract_embeddings(encoder, clips(n_clips), batch_size=batch_size, device=device)
    return n_clips / (time.perf_counter() - started)


def train_rate(model, batch_size: int, n_steps: int, precision: str, device: str) -> dict[str, float]:
    """Seconds a step, clips a second and peak GPU memory of ``n_steps`` after one warm-up step."""
    from components.wav2vec2.model import collate
    from components.wav2vec2.run import TrainingRun
    from components.wav2vec2.settings import settings_from

    settings = settings_from("tuned", {"batch_size": batch_size, "precision": precision, "device": device})
    run = TrainingRun(model.to(device), settings, n_train=1000 * batch_size, device=torch.device(device))
    values, mask = collate(clips(batch_size), max_dur=CLIP_DUR)
    batch = (values, mask, torch.arange(batch_size) % model.config.num_labels)
    run.train_epoch([batch], save=lambda: None)  # warm-up: allocator, kernels, autotuning
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    run.state["step_seconds"] = 0.0
    run.train_epoch([batch] * n_steps, save=lambda: None)
    seconds = run.state["step_seconds"] / n_steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return {"step_s": seconds, "clips_per_s": batch_size / seconds, "peak_gib": peak}


def cpu_part() -> list[dict]:
    from transformers import Wav2Vec2Model

    from components.wav2vec2.embed import load_encoder
    from components.wav2vec2.model import build_classifier
    from components.wav2vec2.pretrained import save_tiny_checkpoint

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        tiny = str(save_tiny_checkpoint(Path(folder) / "tiny"))
        rate = embed_rate(load_encoder(tiny), n_clips=32, batch_size=8)
        rows.append({"model": "tiny (2x32)", "task": "embeddings, batch 8", "clips/s": rate})
        model = build_classifier(tiny, 8, weighted_layer_sum=True, freeze_feature_encoder=True)
        timing = train_rate(model, batch_size=8, n_steps=5, precision="fp32", device="cpu")
        rows.append(
            {"model": "tiny (2x32)", "task": "fine-tune step, batch 8", "clips/s": timing["clips_per_s"]}
        )
        rows[-1]["s/step"] = timing["step_s"]
    torch.manual_seed(0)
    rate = embed_rate(Wav2Vec2Model(base_config()), n_clips=8, batch_size=4)
    rows.append({"model": "base-sized (12x768)", "task": "embeddings, batch 4", "clips/s": rate})
    for frozen in (True, False):
        model = build_classifier(base_config(), 8, weighted_layer_sum=True, freeze_feature_encoder=frozen)
        timing = train_rate(model, batch_size=2, n_steps=3, precision="fp32", device="cpu")
        task = f"fine-tune step, batch 2, front end {'frozen' if frozen else 'trained'}"
        rows.append({"model": "base-sized (12x768)", "task": task, "clips/s": timing["clips_per_s"]})
        rows[-1]["s/step"] = timing["step_s"]
    return rows


def gpu_part() -> list[dict]:
    from components.wav2vec2.model import build_classifier

    rows = []
    for label, batch_size, precision, frozen, layer_sum, checkpointing in GPU_ROWS:
        torch.manual_seed(0)
        model = build_classifier(
            base_config(),
            8,
            weighted_layer_sum=layer_sum,
            freeze_feature_encoder=frozen,
            gradient_checkpointing=checkpointing,
        )
        timing = train_rate(model, batch_size, n_steps=10, precision=precision, device="cuda")
        rows.append({"setting": label, "batch": batch_size, "precision": precision, **timing})
        rows[-1]["min/1000 clips"] = 1000 / timing["clips_per_s"] / 60
        del model
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="also measure training throughput on CUDA")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1)")
    add_common_args(parser, "wav2vec2_speed")
    args = parser.parse_args()
    from transformers import __version__ as transformers_version
    from transformers.utils import logging

    from components.evaluation.metrics import format_table

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    lines = [
        "# wav2vec2 speed",
        "",
        f"`python benchmarks/wav2vec2_speed.py{' --gpu' if args.gpu else ''}` on {platform.machine()}, "
        f"torch {torch.__version__}, transformers {transformers_version}; random weights, "
        f"{CLIP_DUR:.0f} s clips.",
        "",
        f"## CPU ({args.threads} thread{'s' if args.threads > 1 else ''})",
        "",
        format_table(cpu_part(), ["model", "task", "clips/s", "s/step"], digits=2),
        "",
        "## GPU: base-sized training throughput",
        "",
    ]
    if not torch.cuda.is_available():
        lines.append(
            "The GPU figures could not be measured: torch sees no CUDA device on this machine "
            "(run with `--gpu` on a CUDA machine)."
        )
    elif not args.gpu:
        lines.append("Not measured: add `--gpu`.")
    else:
        lines += [f"Device: {torch.cuda.get_device_name()}.", ""]
        columns = ["setting", "batch", "precision", "step_s", "clips_per_s", "peak_gib", "min/1000 clips"]
        lines.append(format_table(gpu_part(), columns, digits=3))
    lines += ["", f"Benchmark time: {time.perf_counter() - started:.0f} s."]
    text = "\n".join(lines) + "\n"
    write_report(args.out, text)


if __name__ == "__main__":
    main()
