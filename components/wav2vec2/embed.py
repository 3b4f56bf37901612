"""The CPU path: frozen wav2vec2 embeddings of every layer, a light head on them, and their table form.

A forward pass per clip without gradients costs a fraction of fine-tuning, and the
embeddings are computed once and cached: heads on them train in seconds on a CPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from torch import nn

from components.errors import SerError
from components.wav2vec2.inputs import is_whisper, preprocessing_of, record
from components.wav2vec2.model import batch_inputs, conv_sees_padding, crop_length, length_batches

POOLINGS = ("mean", "stats")
HEADS = ("logreg", "mlp")
ATTRS_KEY = "ser.embedding"  # DataFrame.attrs key (pandas keeps attrs through Parquet)


def load_encoder(pretrained: str) -> nn.Module:
    """The bare encoder of local weights, in eval mode, its preprocessing recorded in its config.

    ``AutoModel`` (``Wav2Vec2Model`` for wav2vec2); for a Whisper checkpoint, its audio encoder.

    Raises:
        PretrainedUnavailable: ``pretrained`` is an id missing from the local cache.
    """
    from transformers import AutoConfig, AutoModel

    from components.wav2vec2 import hf_whisper
    from components.wav2vec2.pretrained import resolve_pretrained

    folder = resolve_pretrained(pretrained, local_only=True)
    if is_whisper(AutoConfig.from_pretrained(folder, local_files_only=True)):
        return record(hf_whisper.load_encoder(folder), folder)
    return record(AutoModel.from_pretrained(folder, local_files_only=True).eval(), folder)


def hidden_states(
    encoder: nn.Module, inputs: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``([B, layers, frames, hidden], frame mask [B, frames])`` of one batch from ``batch_inputs``."""
    if is_whisper(encoder.config):
        from components.wav2vec2.hf_whisper import encode

        return torch.stack(encode(encoder, inputs, mask), dim=1).float(), mask
    outputs = encoder(inputs, attention_mask=mask, output_hidden_states=True)
    hidden = torch.stack(outputs.hidden_states, dim=1).float()
    return hidden, encoder._get_feature_vector_attention_mask(hidden.shape[2], mask)


def extract_embeddings(
    pretrained: str | nn.Module,
    waves: Sequence[np.ndarray],
    batch_size: int = 8,
    pooling: str = "mean",
    device: str = "cpu",
    *,
    max_dur: float | None = None,
) -> np.ndarray:
    """Time-pooled hidden states of every layer of a frozen wav2vec2 or Whisper encoder, one row a clip.

    Clips are prepared as the checkpoint says (``inputs.preprocessing_of``). Frames of padding
    are left out of the pooling (the attention mask, reduced to frames as the classifier does).
    When the feature encoder normalises over time (wav2vec2-base), only clips of equal length
    share a batch, so a clip's embedding never depends on its batch.

    Args:
        pretrained: A model folder or cached id, or an encoder already loaded (:func:`load_encoder`).
        waves: 16 kHz mono float signals.
        batch_size: Most clips a forward pass.
        pooling: ``mean`` over frames, or ``stats``: mean then standard deviation.
        device: ``cpu`` or ``cuda``.
        max_dur: Keep the middle ``max_dur`` seconds of longer clips; None = whole clips.

    Returns:
        float32 ``[n_clips, n_layers + 1, hidden]`` (``2 * hidden`` for ``stats``); layer 0 is the
        transformer's input (the projected convolutional features).

    Raises:
        SerError: An unknown pooling, no clips, or an empty clip.
    """
    if pooling not in POOLINGS:
        raise SerError(f"unknown pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
    if len(waves) == 0:
        raise SerError("no clips to embed")
    encoder = load_encoder(pretrained) if isinstance(pretrained, str) else pretrained
    encoder.to(device).eval()
    config = encoder.config
    width = config.hidden_size * (2 if pooling == "stats" else 1)
    out = np.empty((len(waves), config.num_hidden_layers + 1, width), dtype=np.float32)
    lengths = [crop_length(len(wave), max_dur) for wave in waves]
    preprocessing = preprocessing_of(config)
    with torch.inference_mode():
        for batch in length_batches(lengths, batch_size, equal_only=conv_sees_padding(config)):
            values, mask = batch_inputs(preprocessing, [waves[i] for i in batch], max_dur)
            hidden, frames = hidden_states(encoder, values.to(device), mask.to(device))
            weights = frames.to(hidden.dtype)[:, None, :, None]
            count = weights.sum(dim=2)
            mean = (hidden * weights).sum(dim=2) / count
            if pooling == "stats":
                var = (((hidden - mean[:, :, None]) ** 2) * weights).sum(dim=2) / count
                mean = torch.cat([mean, var.sqrt()], dim=-1)
            out[batch] = mean.cpu().numpy()
    return out


def select_layers(embeddings: np.ndarray, layer: str | int = "all") -> np.ndarray:
    """``[n, layers, width]`` to ``[n, features]``: ``all`` layers side by side, their ``mean``, or one."""
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 3:
        raise SerError(f"embeddings must be [n_clips, n_layers, width], got shape {embeddings.shape}")
    if layer == "all":
        return embeddings.reshape(len(embeddings), -1)
    if layer == "mean":
        return embeddings.mean(axis=1)
    if isinstance(layer, int | np.integer) and -embeddings.shape[1] <= layer < embeddings.shape[1]:
        return embeddings[:, layer]
    raise SerError(f"layer is {layer!r}: use all, mean or a layer index below {embeddings.shape[1]}")


def fit_embedding_head(
    embeddings: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    kind: str = "logreg",
    layer: str | int = "all",
    seed: int = 0,
) -> Pipeline:
    """Fit a light classifier on frozen embeddings: layer choice, standardisation, then the head.

    Args:
        embeddings: From :func:`extract_embeddings`.
        labels: One label per clip (emotion codes or class indices; predictions use the same).
        kind: ``logreg`` (multinomial logistic regression) or ``mlp`` (one hidden layer of 256).
        layer: ``all`` (every layer concatenated), ``mean`` (layers averaged) or a layer index.
        seed: Fixes the MLP's initialisation.

    Returns:
        A fitted sklearn ``Pipeline``; ``predict``/``predict_proba`` take 3-D embeddings too.

    Raises:
        SerError: An unknown kind or layer, or labels that do not match the clips.
    """
    if kind not in HEADS:
        raise SerError(f"unknown embedding head {kind!r}: choose one of {', '.join(HEADS)}")
    labels = np.asarray(labels)
    select_layers(embeddings[:1], layer)  # fail on a bad layer before fitting
    if len(labels) != len(embeddings) or len(np.unique(labels)) < 2:
        raise SerError(
            f"need one label per clip and two classes at least: {len(labels)} for {len(embeddings)}"
        )
    if kind == "logreg":
        head = LogisticRegression(max_iter=2000, C=1.0)
    else:
        head = MLPClassifier(
            (256,), alpha=1e-3, max_iter=300, early_stopping=len(labels) >= 100, random_state=seed
        )
    steps = [
        ("layers", FunctionTransformer(select_layers, kw_args={"layer": layer})),
        ("scale", StandardScaler()),
    ]
    return Pipeline([*steps, ("head", head)]).fit(embeddings, labels)


def embeddings_to_frame(
    clip_ids: Sequence[str], embeddings: np.ndarray, info: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """A table for a Parquet cache: ``clip_id`` and ``embedding`` (float32 bytes, C order, little-endian).

    Like the ``logmel`` feature table, every row shares one shape; it is kept with ``info`` (say
    the model and pooling) in ``frame.attrs["ser.embedding"]``, which ``to_parquet`` preserves.
    """
    if len(clip_ids) != len(embeddings):
        raise SerError(f"{len(clip_ids)} clip ids for {len(embeddings)} embeddings")
    values = np.ascontiguousarray(embeddings, dtype="<f4")
    frame = pd.DataFrame({"clip_id": list(clip_ids), "embedding": [row.tobytes() for row in values]})
    frame.attrs[ATTRS_KEY] = {**(info or {}), "dtype": "<f4", "shape": list(values.shape[1:])}
    return frame


def frame_to_embeddings(frame: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """``(clip_ids, embeddings [n, layers, width])`` back from :func:`embeddings_to_frame`'s table.

    Raises:
        SerError: The table lacks its shape metadata (written without pandas' attrs).
    """
    meta = frame.attrs.get(ATTRS_KEY)
    if not meta or "shape" not in meta:
        raise SerError(
            f"the embeddings table has no {ATTRS_KEY!r} metadata; rewrite it with embeddings_to_frame"
        )
    blob = b"".join(frame["embedding"].tolist())
    values = np.frombuffer(blob, dtype=meta["dtype"]).reshape((len(frame), *meta["shape"]))
    return frame["clip_id"].tolist(), values.astype(np.float32)
