"""Whisper's audio encoder in transformers: every hidden layer, and an emotion classifier to fine-tune.

The ``openai/whisper-*`` checkpoints (or a local folder) slot in beside the wav2vec2 family:
``embed.load_encoder`` and ``model.build_classifier`` dispatch here for a Whisper config, and
the same embedding heads and fine-tuning loop run on them.

transformers' own ``WhisperEncoder.forward`` accepts only 30 s inputs (3000 mel frames) and no
attention mask, so a 3 s clip would pay for 30 s and pool over the padding. :func:`encode` runs
the same modules on each batch's own length instead (the positional table sliced, as CTranslate2
and ``components.features.whisper``'s ``own`` window do) and masks padded frames out of the
attention: a clip's hidden states then do not depend on the clips batched with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import WhisperForAudioClassification
from transformers.modeling_outputs import SequenceClassifierOutput

if TYPE_CHECKING:
    from transformers.models.whisper.modeling_whisper import WhisperEncoder


def encode(encoder: WhisperEncoder, features: torch.Tensor, frame_mask: torch.Tensor) -> list[torch.Tensor]:
    """Hidden states of every layer for a batch of log-mels of any length up to 30 s.

    Args:
        encoder: A transformers ``WhisperEncoder``.
        features: ``[B, n_mels, F]`` log-mels, ``F`` even, zero beyond each clip (``inputs.batch_inputs``).
        frame_mask: ``[B, F // 2]``, 1 on the output frames of each clip.

    Returns:
        ``n_layers + 1`` tensors ``[B, F // 2, width]``: the transformer's input (convolutions plus
        positions), then each layer's output, the last after the final layer norm (as
        transformers and CTranslate2 return it).
    """
    hidden = nn.functional.gelu(encoder.conv1(features))
    hidden = nn.functional.gelu(encoder.conv2(hidden)).permute(0, 2, 1)
    n_frames = hidden.shape[1]
    if n_frames > encoder.embed_positions.num_embeddings:
        limit = encoder.embed_positions.num_embeddings
        raise ValueError(f"{n_frames} encoder frames; the positional table holds {limit}")
    hidden = hidden + encoder.embed_positions.weight[:n_frames]
    hidden = nn.functional.dropout(hidden, p=encoder.dropout, training=encoder.training)
    # additive mask over keys: padded frames are never attended to
    blocked = (1 - frame_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
    states = [hidden]
    for layer in encoder.layers:
        hidden = layer(hidden, blocked)
        states.append(hidden)
    states[-1] = encoder.layer_norm(hidden)
    return states


def pool_frames(hidden: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the frames of each clip: ``[B, F, width]`` to ``[B, width]``."""
    weights = frame_mask.to(hidden.dtype)[:, :, None]
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1)


class WhisperEmotionClassifier(WhisperForAudioClassification):
    """transformers' ``WhisperForAudioClassification`` (encoder, layer weights, projector,
    classifier: the same weights and ``from_pretrained``) on inputs of their own length.

    ``forward(input_features, attention_mask)`` takes :func:`inputs.batch_inputs`' log-mels and
    frame mask, as the wav2vec2 classifier takes waveforms and their mask, so the fine-tuning
    loop and batch prediction run it unchanged. Pooling covers each clip's frames only.
    """

    def forward(  # type: ignore[override]
        self, input_features: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones(
                input_features.shape[0], input_features.shape[-1] // 2, device=input_features.device
            )
        states = encode(self.encoder, input_features, attention_mask)
        if self.config.use_weighted_layer_sum:
            weights = nn.functional.softmax(self.layer_weights, dim=-1)
            hidden = (torch.stack(states, dim=1) * weights[None, :, None, None]).sum(dim=1)
        else:
            hidden = states[-1]
        logits = self.classifier(pool_frames(self.projector(hidden), attention_mask))
        return SequenceClassifierOutput(logits=logits)

    @classmethod
    def from_checkpoint(cls, folder: str | Path, **options: Any) -> WhisperEmotionClassifier:
        """A classifier with a new head on the encoder of a local Whisper folder.

        The folder holds a whole Whisper (``openai/whisper-*``: the decoder is left out) or an
        encoder alone (:func:`load_encoder`'s ``save_pretrained``, ``ct2_whisper.convert_encoder``).

        Args:
            folder: The local folder.
            options: Config values to set (``num_labels``, ``id2label``, ``use_weighted_layer_sum``...).
        """
        from transformers import AutoConfig, WhisperConfig

        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        if not _encoder_only(config):
            return cls.from_pretrained(str(folder), local_files_only=True, **options)
        model = cls(WhisperConfig.from_dict({**config.to_dict(), **options, "architectures": None}))
        model.encoder.load_state_dict(load_encoder(folder).state_dict())
        return model

    def freeze_feature_encoder(self) -> None:
        """Keep the convolutional front end fixed (the wav2vec2 option of the same name)."""
        for module in (self.encoder.conv1, self.encoder.conv2):
            module.requires_grad_(False)


def _encoder_only(config: Any) -> bool:
    """Whether a folder holds a ``WhisperEncoder`` alone (saved by an embed model or a conversion)."""
    return (config.architectures or [None])[0] == "WhisperEncoder"


def load_encoder(folder: str | Path) -> WhisperEncoder:
    """The encoder of a local Whisper folder: a full model's (decoder dropped) or a saved encoder.

    Loads with local files only; call ``resolve_pretrained`` first for a hub id.
    """
    from transformers import AutoConfig, WhisperModel
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    if _encoder_only(config):
        return WhisperEncoder.from_pretrained(str(folder), local_files_only=True).eval()
    model = WhisperModel.from_pretrained(str(folder), local_files_only=True)
    encoder = model.get_encoder()
    encoder.config.architectures = ["WhisperEncoder"]
    return encoder.eval()


def load_classifier(folder: str | Path) -> WhisperEmotionClassifier:
    """A fine-tuned classifier written by ``save_pretrained``, from local files only."""
    return WhisperEmotionClassifier.from_pretrained(str(folder), local_files_only=True).eval()


def save_tiny_whisper(
    folder: str | Path,
    n_layers: int = 2,
    d_model: int = 32,
    *,
    n_mels: int = 80,
    max_source_positions: int = 200,
    do_normalize: bool = False,
    seed: int = 0,
) -> Path:
    """Write a tiny, randomly initialised Whisper (config, weights, feature-extractor config).

    The stand-in for ``openai/whisper-*`` in tests: the same code paths, no download. With 200
    positions it encodes clips up to 4 s.

    Args:
        folder: Where to write; created if needed.
        n_layers: Encoder (and decoder) layers.
        d_model: Width; a multiple of the two heads.
        n_mels: Mel bins it reads (80; 128 like large-v3).
        max_source_positions: Encoder frames of 20 ms it can take.
        do_normalize: The feature extractor's waveform standardisation.
        seed: Fixes the random weights.
    """
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    config = WhisperConfig(
        vocab_size=64,
        num_mel_bins=n_mels,
        encoder_layers=n_layers,
        decoder_layers=n_layers,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=2 * d_model,
        decoder_ffn_dim=2 * d_model,
        d_model=d_model,
        max_source_positions=max_source_positions,
        max_target_positions=32,
        classifier_proj_size=d_model,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        WhisperModel(config).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=n_mels, do_normalize=do_normalize).save_pretrained(folder)
    return folder
