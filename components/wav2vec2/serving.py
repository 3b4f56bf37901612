"""A wav2vec2 emotion model with its preprocessing: raw audio in, emotion and probabilities out.

Two kinds share :class:`Wav2Vec2Predictor`: ``embed`` (a frozen encoder's time-pooled hidden
states of every layer, then a light sklearn head) and ``finetune`` (a fine-tuned sequence
classifier). The torch model is never pickled: it is written with ``save_pretrained`` to a
folder that travels as an MLflow artifact and is loaded from it, local files only, when the
pyfunc loads. :class:`Wav2Vec2Pyfunc` is the MLflow adapter, with the same inputs and output
columns as ``components.serving.pyfunc.EmotionPyfunc``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.data.audio import prepare_signal
from components.data.ravdess import EMOTIONS
from components.errors import SerError
from components.serving.pyfunc import EmotionPyfunc
from components.wav2vec2.model import SAMPLING_RATE

KINDS: tuple[str, ...] = ("embed", "finetune")
DEFAULT_CLIP_DUR = 4.0  # window length offered to callers that cut long recordings (the model takes any)


@dataclass
class Wav2Vec2Predictor:
    """What a wav2vec2 emotion model needs besides its weights.

    Attributes:
        kind: ``embed`` (encoder + ``head``) or ``finetune`` (a sequence classifier whose class
            ``i`` is emotion ``i + 1``).
        trim_top_db: Silence trimming of the training clips (``preprocess.trim_top_db``).
        head: ``embed``: the fitted head of ``fit_embedding_head`` (fitted on emotion codes).
        pooling: ``embed``: how frames were pooled (``mean`` or ``stats``).
        max_dur: Keep the middle ``max_dur`` seconds of longer clips, as in training; None = whole.
        batch_size: Most clips a forward pass.
        device: ``auto`` (CUDA when present), ``cuda`` or ``cpu``.
        info: Free description (pretrained id, metrics, training data), shown to users.
        model: The loaded torch module (:meth:`load_model`); left out when pickled.
    """

    kind: str
    trim_top_db: float | None
    head: Any = None
    pooling: str = "mean"
    max_dur: float | None = None
    batch_size: int = 8
    device: str = "auto"
    info: dict[str, Any] = field(default_factory=dict)
    model: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SerError(f"unknown wav2vec2 model kind {self.kind!r}: choose one of {', '.join(KINDS)}")
        if self.kind == "embed" and self.head is None:
            raise SerError("an embed predictor needs the fitted head")

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "model": None}  # the weights travel as a save_pretrained folder

    @property
    def extract(self) -> dict[str, Any]:
        """How clips are prepared, under ``EmotionPredictor.extract``'s keys (``clip_dur``: windowing)."""
        clip_dur = self.max_dur or DEFAULT_CLIP_DUR
        return {"sampling_rate": SAMPLING_RATE, "trim_top_db": self.trim_top_db, "clip_dur": clip_dur}

    def load_model(self, folder: str | Path) -> Wav2Vec2Predictor:
        """Load the torch model from a ``save_pretrained`` folder (never from the network)."""
        from transformers import AutoConfig, AutoModel, AutoModelForAudioClassification

        from components.wav2vec2 import hf_whisper
        from components.wav2vec2.inputs import is_whisper

        if is_whisper(AutoConfig.from_pretrained(str(folder), local_files_only=True)):
            loader = hf_whisper.load_encoder if self.kind == "embed" else hf_whisper.load_classifier
            self.model = loader(folder)
            return self
        loader = AutoModel if self.kind == "embed" else AutoModelForAudioClassification
        self.model = loader.from_pretrained(str(folder), local_files_only=True).eval()
        return self

    def prepare(self, signal: np.ndarray, rate: int) -> np.ndarray:
        """Mono, 16 kHz and trimmed as the training clips were (natural length)."""
        return prepare_signal(signal, rate, None, self.trim_top_db, SAMPLING_RATE)

    def predict_proba(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities ``[n, 8]`` of the emotions in code order (0 for a class the head never saw)."""
        from components.wav2vec2.embed import extract_embeddings
        from components.wav2vec2.predict import predict_proba, resolve_device

        if self.model is None:
            raise SerError("the wav2vec2 model is not loaded: call load_model(folder) first")
        device = str(resolve_device(self.device))
        out = np.zeros((len(waves), len(EMOTIONS)), dtype=np.float64)
        if self.kind == "embed":
            embeddings = extract_embeddings(
                self.model, waves, self.batch_size, self.pooling, device, max_dur=self.max_dur
            )
            codes, proba = self.head.classes_, self.head.predict_proba(embeddings)
        else:
            proba = predict_proba(self.model, waves, self.batch_size, device, max_dur=self.max_dur)
            codes = np.arange(1, proba.shape[1] + 1)
        out[:, [int(code) - 1 for code in codes]] = proba
        return out

    def predict_signals(self, signals: Sequence[tuple[np.ndarray, int]]) -> pd.DataFrame:
        """Label, confidence and one probability column per emotion for raw ``(signal, rate)`` pairs."""
        proba = self.predict_proba([self.prepare(signal, rate) for signal, rate in signals])
        table = pd.DataFrame(proba, columns=[f"prob_{name}" for name in EMOTIONS.values()])
        best = proba.argmax(axis=1)
        table.insert(0, "confidence", proba[np.arange(len(proba)), best])
        table.insert(0, "label", [EMOTIONS[int(i) + 1] for i in best])
        return table


class Wav2Vec2Pyfunc(EmotionPyfunc):
    """MLflow pyfunc adapter: artifacts ``predictor`` (joblib) and ``model_dir`` (the HF folder).

    Inputs, outputs and ``model_config`` keys are those of ``EmotionPyfunc``, plus ``device``
    (``auto``, ``cpu`` or ``cuda``).
    """

    def load_context(self, context: Any) -> None:
        """Load the predictor and the serving limits as ``EmotionPyfunc`` does, then the model folder."""
        super().load_context(context)
        predictor: Wav2Vec2Predictor = self.predictor
        predictor.device = str((context.model_config or {}).get("device") or predictor.device)
        self.predictor = predictor.load_model(context.artifacts["model_dir"])
