"""wav2vec2 for emotion: pretrained weights, the classifier, fine-tuning and frozen embeddings.

Modules (import them directly; this package imports nothing, so ``import components`` stays
light and never pulls in transformers):

- :mod:`~components.wav2vec2.pretrained`: find weights offline, write a tiny stand-in checkpoint.
- :mod:`~components.wav2vec2.inputs`: each checkpoint's own preprocessing (``do_normalize``, mels).
- :mod:`~components.wav2vec2.model`: the sequence classifier and the batch collator.
- :mod:`~components.wav2vec2.hf_whisper`: Whisper encoders (``openai/whisper-*``) beside wav2vec2:
  every layer, and a classifier the same loop fine-tunes.
- :mod:`~components.wav2vec2.ct2_whisper`: CTranslate2 Whisper weights (the bundled tiny.en,
  ``Systran/faster-whisper-*``) converted to transformers, and names resolved to them.
- :mod:`~components.wav2vec2.settings`: fine-tuning settings and their presets.
- :mod:`~components.wav2vec2.checkpoint`: atomic, resumable training checkpoints.
- :mod:`~components.wav2vec2.finetune`: the fine-tuning loop and batch prediction.
- :mod:`~components.wav2vec2.embed`: the CPU path, frozen embeddings of every layer and a light head.
"""
