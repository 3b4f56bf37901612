"""The wav2vec2 emotion classifier and the batch collator that feeds it raw waveforms.

Class index ``i`` of every model here is RAVDESS emotion code ``i + 1`` (``neutral`` is 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from components.data.ravdess import EMOTIONS
from components.errors import SerError
from components.wav2vec2 import inputs

if TYPE_CHECKING:
    from transformers import PretrainedConfig, Wav2Vec2Config

SAMPLING_RATE = 16_000  # every wav2vec2 checkpoint was pretrained at 16 kHz


def build_classifier(
    pretrained: str | PretrainedConfig,
    n_classes: int = len(EMOTIONS),
    *,
    weighted_layer_sum: bool = False,
    freeze_feature_encoder: bool = True,
    gradient_checkpointing: bool = False,
) -> nn.Module:
    """A ``Wav2Vec2ForSequenceClassification`` (or, for a Whisper checkpoint, a
    ``hf_whisper.WhisperEmotionClassifier``) with emotion labels, from local weights.

    The encoder comes from ``pretrained``; the head (projector, classifier and, with
    ``weighted_layer_sum``, the layer weights) is new, drawn from torch's global generator:
    call ``torch.manual_seed`` first to fix it.

    Args:
        pretrained: A model folder or a cached HF id (see ``resolve_pretrained``; nothing is
            downloaded here), or a ``Wav2Vec2Config`` (``WhisperConfig``) for a randomly
            initialised model (benchmarks: ``Wav2Vec2Config()`` is base-sized). A folder's
            ``preprocessor_config.json`` is recorded in the model's config (``inputs.record``).
        n_classes: Output classes, the first ``n_classes`` emotions (at most 8).
        weighted_layer_sum: Pool a learned softmax-weighted sum of every layer's hidden states
            instead of the last layer's (for emotion the middle layers tend to carry most).
            Turns LayerDrop off, which transformers 5 cannot combine with it.
        freeze_feature_encoder: Keep the convolutional front end fixed: its backward pass is
            skipped, and it needs no adapting to speech it was pretrained on.
        gradient_checkpointing: Recompute activations in the backward pass: less memory, slower.

    Raises:
        PretrainedUnavailable: ``pretrained`` is an id that is not in the local cache.
        SerError: ``n_classes`` is not between 2 and 8.
    """
    from transformers import AutoConfig, PretrainedConfig

    from components.wav2vec2.pretrained import resolve_pretrained

    if not 2 <= n_classes <= len(EMOTIONS):
        raise SerError(f"n_classes is {n_classes}; a wav2vec2 emotion classifier has 2 to 8 classes")
    labels = {"num_labels": n_classes, "use_weighted_layer_sum": weighted_layer_sum}
    labels["id2label"] = {i: EMOTIONS[i + 1] for i in range(n_classes)}
    labels["label2id"] = {name: i for i, name in labels["id2label"].items()}
    if isinstance(pretrained, PretrainedConfig):
        folder, config = None, pretrained
    else:
        folder = resolve_pretrained(pretrained, local_only=True)
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    whisper = inputs.is_whisper(config)
    if weighted_layer_sum and not whisper:  # hf_whisper.encode never drops layers
        # transformers 5 records hidden states with hooks, so a layer LayerDrop skips in training
        # leaves one fewer state than layer_weights expects and the forward pass fails.
        labels["layerdrop"] = 0.0
    if folder is None:
        config = type(config).from_dict({**config.to_dict(), **labels})
        model = classifier_class(config)(config)
    else:
        if whisper:  # a whole Whisper or an encoder alone: from_checkpoint reads both
            model = classifier_class(config).from_checkpoint(folder, **labels)
        else:
            model = classifier_class(config).from_pretrained(folder, local_files_only=True, **labels)
        inputs.record(model, folder)  # the checkpoint's own preprocessing, saved with the model
    if weighted_layer_sum:
        # transformers 5 builds the model on the meta device and _init_weights skips this bare
        # Parameter, so from_pretrained leaves it as uninitialised memory (even NaN): set the
        # uniform weights its __init__ meant.
        with torch.no_grad():
            model.layer_weights.fill_(1.0 / model.layer_weights.numel())
    if whisper:  # its positions are fixed sinusoids, which transformers leaves trainable
        model.encoder.embed_positions.requires_grad_(False)
    if freeze_feature_encoder:
        model.freeze_feature_encoder()
    if gradient_checkpointing:
        # transformers 5 renamed gradient_checkpointing_enable (deprecated, removed in v6)
        enable = (
            getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        )
        enable()
    return model


def classifier_class(config: PretrainedConfig) -> type[nn.Module]:
    """The sequence classifier of a config: Whisper's encoder classifier, else wav2vec2's."""
    if inputs.is_whisper(config):
        from components.wav2vec2.hf_whisper import WhisperEmotionClassifier

        return WhisperEmotionClassifier
    from transformers import Wav2Vec2ForSequenceClassification

    return Wav2Vec2ForSequenceClassification


def head_parameter_names(model: nn.Module) -> set[str]:
    """Names of the parameters that start from scratch: projector, classifier, layer weights."""
    pretrained = ("wav2vec2.", "encoder.")  # the wav2vec2 and Whisper encoders' prefixes
    return {name for name, _ in model.named_parameters() if not name.startswith(pretrained)}


def conv_sees_padding(config: Wav2Vec2Config) -> bool:
    """Whether the feature encoder normalises over time, so zero padding changes a clip's output.

    ``feat_extract_norm="group"`` (wav2vec2-base) normalises each channel over the whole padded
    input; an exact, batch-independent result then needs batches of equal-length clips.
    """
    return getattr(config, "feat_extract_norm", "layer") == "group"


def crop_length(n_samples: int, max_dur: float | None, sampling_rate: int = SAMPLING_RATE) -> int:
    """How many samples of a clip :func:`collate` keeps."""
    return n_samples if max_dur is None else min(n_samples, round(max_dur * sampling_rate))


def collate(
    waves: Sequence[np.ndarray],
    max_dur: float | None,
    sampling_rate: int = SAMPLING_RATE,
    normalize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad a batch of waveforms to its longest clip, as ``Wav2Vec2FeatureExtractor`` prepares them.

    Clips longer than ``max_dur`` keep their middle ``max_dur`` seconds (RAVDESS clips open and
    close with silence). Each clip is normalised to zero mean and unit variance over its real
    samples (``do_normalize``); padding is zeros and is marked 0 in the attention mask.

    Args:
        waves: Mono float signals at ``sampling_rate`` (16 kHz for every wav2vec2).
        max_dur: Longest duration kept, in seconds; None keeps whole clips.
        sampling_rate: Samples per second of ``waves``.
        normalize: Standardise each clip (the checkpoint's ``do_normalize``; True for wav2vec2-base).

    Returns:
        ``(input_values [B, T] float32, attention_mask [B, T] int64)``, ``T`` the longest kept length.

    Raises:
        SerError: An empty batch or an empty clip.
    """
    if len(waves) == 0:
        raise SerError("cannot collate an empty batch of waveforms")
    lengths = [crop_length(len(w), max_dur, sampling_rate) for w in waves]
    if min(lengths) == 0:
        raise SerError("a waveform in the batch is empty; drop empty clips before wav2vec2")
    values = np.zeros((len(waves), max(lengths)), dtype=np.float32)
    mask = np.zeros((len(waves), max(lengths)), dtype=np.int64)
    for row, (wave, length) in enumerate(zip(waves, lengths, strict=True)):
        start = (len(wave) - length) // 2
        clip = np.asarray(wave[start : start + length], dtype=np.float64)
        if normalize:
            clip = inputs.standardise(clip)
        values[row, :length] = clip
        mask[row, :length] = 1
    return torch.from_numpy(values), torch.from_numpy(mask)


def batch_inputs(
    preprocessing: dict[str, Any], waves: Sequence[np.ndarray], max_dur: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch in the form the model reads, and its mask of real (unpadded) positions.

    Args:
        preprocessing: From ``inputs.preprocessing_of``.
        waves: 16 kHz mono signals.
        max_dur: Keep the middle ``max_dur`` seconds of longer clips; None = whole clips.

    Returns:
        waveform: ``(input_values [B, T], attention_mask [B, T])`` (see :func:`collate`);
        log_mel: ``(input_features [B, n_mels, F], frame_mask [B, F // 2])``, the mask over the
        encoder's output frames, each clip's log-mel computed on its own (see ``inputs.whisper_features``).

    Raises:
        SerError: An empty batch or an empty clip.
    """
    if preprocessing["kind"] == "waveform":
        return collate(waves, max_dur, normalize=preprocessing["do_normalize"])
    if len(waves) == 0:
        raise SerError("cannot prepare an empty batch of waveforms")
    clips = []
    for wave in waves:
        length = min(crop_length(len(wave), max_dur), preprocessing["max_samples"])
        if length == 0:
            raise SerError("a waveform in the batch is empty; drop empty clips before the encoder")
        start = (len(wave) - length) // 2
        clips.append(inputs.whisper_features(wave[start : start + length], preprocessing))
    n_frames = max(features.shape[1] for features, _ in clips)
    values = np.zeros((len(clips), preprocessing["n_mels"], n_frames), dtype=np.float32)
    mask = np.zeros((len(clips), n_frames // 2), dtype=np.int64)
    for row, (features, n_valid) in enumerate(clips):
        values[row, :, : features.shape[1]] = features  # zero padding: the convolutions' own padding
        mask[row, :n_valid] = 1
    return torch.from_numpy(values), torch.from_numpy(mask)


def length_batches(lengths: Sequence[int], batch_size: int, equal_only: bool = False) -> list[list[int]]:
    """Indices grouped into batches of similar length (shortest first), to pad as little as possible.

    Args:
        lengths: Kept length of each clip (see :func:`crop_length`).
        batch_size: Most clips a batch.
        equal_only: Put only clips of exactly equal length together (see :func:`conv_sees_padding`).
    """
    order = np.argsort(np.asarray(lengths), kind="stable")
    batches: list[list[int]] = []
    for index in order.tolist():
        last = batches[-1] if batches else None
        if last is None or len(last) >= batch_size or (equal_only and lengths[last[0]] != lengths[index]):
            batches.append([index])
        else:
            last.append(index)
    return batches
