"""Pretrained wav2vec2 weights: find them without surprises, or write a tiny random stand-in.

Models are loaded from a *local folder* only: :func:`resolve_pretrained` turns a folder or a
Hugging Face id into a folder (from the local HF cache, or downloading when allowed) and turns
every way of failing offline into :class:`PretrainedUnavailable`, one line, no stack trace.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from components.errors import SerError

WEIGHT_FILES: tuple[str, ...] = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
DOWNLOAD_PATTERNS: list[str] = ["*.json", "*.safetensors", "*.bin"]  # not the TF/Flax copies
_TRUE = {"1", "on", "yes", "true"}


class PretrainedUnavailable(SerError):
    """The pretrained weights are neither a local folder nor cached, and cannot be downloaded now."""

    def __init__(self, model_id: str) -> None:
        super().__init__(
            f"pretrained weights for {model_id} are not available offline; download them on a "
            f"connected machine with `hf download {model_id}` (or copy the folder) and set "
            "wav2vec2.pretrained to the local folder"
        )


def offline_mode() -> bool:
    """Whether ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set now.

    huggingface_hub reads the variables once, at import; reading them at call time lets a
    caller (or a test) switch offline after the import.
    """
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return constants.HF_HUB_OFFLINE or any(flag.strip().lower() in _TRUE for flag in flags)


def _has_weights(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any((folder / name).is_file() for name in WEIGHT_FILES)


def resolve_pretrained(
    name_or_path: str, *, local_only: bool = False, cache_dir: str | Path | None = None
) -> str:
    """The local folder holding a pretrained model's config and weights.

    Args:
        name_or_path: A folder (with ``config.json`` and the weights) or a Hugging Face model id
            such as ``facebook/wav2vec2-base``.
        local_only: Never use the network: only a folder or the local HF cache will do. The
            network is never used either when ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` is set.
        cache_dir: The HF cache to look in and download to; None = the default (``HF_HUB_CACHE``).

    Returns:
        The folder, as a string, ready for ``from_pretrained(folder, local_files_only=True)``.

    Raises:
        PretrainedUnavailable: An id that is not cached and cannot be downloaded now (offline,
            ``local_only``, or any connection failure).
        SerError: A folder without config or weights, a missing path that is not a model id, or
            an id the hub does not know.
    """
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        if not _has_weights(folder):
            raise SerError(
                f"{folder}: no config.json and weights ({', '.join(WEIGHT_FILES)}) in this folder; "
                "point wav2vec2.pretrained at a folder written by save_pretrained or `hf download`"
            )
        return str(folder)
    return str(
        hub_snapshot(
            name_or_path,
            DOWNLOAD_PATTERNS,
            cache_dir,
            local_only,
            usable=_has_weights,
            unavailable=PretrainedUnavailable,
            error=SerError,
            hints=(
                "set wav2vec2.pretrained to a local model folder or an id such as facebook/wav2vec2-base",
                "check wav2vec2.pretrained",
                "config.json and weights",
            ),
        )
    )


def hub_snapshot(
    repo_id: str,
    patterns: list[str],
    cache_dir: str | Path | None,
    local_only: bool,
    usable: Callable[[Path], bool],
    unavailable: Callable[[str], SerError],
    error: Callable[[str], SerError],
    hints: tuple[str, str, str],
) -> Path:
    """A model's folder from the Hugging Face hub: the local cache first, a download when allowed.

    Shared by every pretrained encoder (wav2vec2 family, Whisper): offline in any way is
    ``unavailable(repo_id)``; a bad id, an id the hub does not know or a download that ``usable``
    refuses is ``error(message)``, the message ending with ``hints`` (what to set for a bad id,
    what to check for an unknown one, what the folder must hold).
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError
    from huggingface_hub.utils import validate_repo_id

    bad_id, unknown, contents = hints
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise error(f"{repo_id}: no such folder, and not a Hugging Face model id; {bad_id}") from None
    kwargs: dict[str, Any] = {"cache_dir": cache_dir, "allow_patterns": patterns}
    try:
        cached = Path(snapshot_download(repo_id, local_files_only=True, **kwargs))
        if usable(cached):
            return cached
    except Exception:  # not cached, or a half-written cache entry: either way, not usable offline
        pass
    if local_only or offline_mode():
        raise unavailable(repo_id)
    try:
        downloaded = Path(snapshot_download(repo_id, **kwargs))
    except RepositoryNotFoundError:
        raise error(
            f"{repo_id}: the Hugging Face hub has no such model (or it is private or gated); {unknown}"
        ) from None
    except Exception:  # DNS, refused connection, timeout, proxy, 5xx: all mean "not now"
        raise unavailable(repo_id) from None
    if not usable(downloaded):
        raise error(f"{repo_id}: the download holds no {contents} ({downloaded})")
    return downloaded


def save_tiny_checkpoint(
    folder: str | Path,
    n_layers: int = 2,
    hidden_size: int = 32,
    *,
    n_heads: int = 2,
    conv_dim: Sequence[int] = (32, 32, 32),
    conv_kernel: Sequence[int] = (10, 8, 8),
    conv_stride: Sequence[int] = (5, 8, 8),
    do_normalize: bool = True,
    seed: int = 0,
) -> Path:
    """Write a tiny, randomly initialised wav2vec2 (config, weights, feature-extractor config).

    The stand-in for ``facebook/wav2vec2-base`` in tests and CPU benchmarks: the same code paths,
    kilobytes instead of 360 MB, no download. The default convolutions have a total stride of
    320 samples, so like the base model it makes 50 frames a second at 16 kHz.

    Args:
        folder: Where to write; created if needed.
        n_layers: Transformer layers.
        hidden_size: Transformer width; a multiple of ``n_heads`` and of 4 (positional conv groups).
        n_heads: Attention heads.
        conv_dim: Channels of each convolution of the feature encoder.
        conv_kernel: Kernel size of each convolution.
        conv_stride: Stride of each convolution.
        do_normalize: The feature extractor's per-clip standardisation (False, as some HuBERT
            and WavLM checkpoints say).
        seed: Fixes the random weights.

    Returns:
        The folder.
    """
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    config = Wav2Vec2Config(
        hidden_size=hidden_size,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        intermediate_size=2 * hidden_size,
        conv_dim=tuple(conv_dim),
        conv_kernel=tuple(conv_kernel),
        conv_stride=tuple(conv_stride),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        classifier_proj_size=hidden_size,
        vocab_size=8,
        mask_time_prob=0.0,  # no SpecAugment: tiny clips, stable tests
        layerdrop=0.0,
    )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        Wav2Vec2Model(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=do_normalize).save_pretrained(folder)
    return folder
