"""RAVDESS behind the corpus interface: the same discovery and names as ``components.data``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from components.data.corpora.base import Corpus, CorpusClip, CorpusScan
from components.data.discover import check_actor_folder, discover
from components.data.ravdess import EMOTION_NAMES, ClipLabels, parse_name
from components.errors import SerError


def _clip(labels: ClipLabels, location: str) -> CorpusClip:
    return CorpusClip(
        corpus="ravdess",
        clip_id=labels.clip_id,  # unprefixed: the pipeline's feature caches already use these ids
        location=location,
        speaker=f"{labels.actor:02d}",
        native_label=labels.emotion_name,
        gender=labels.gender,
        extras={
            "vocal_channel": str(labels.vocal_channel),
            "intensity": str(labels.intensity),
            "statement": str(labels.statement),
            "repetition": str(labels.repetition),
        },
    )


class Ravdess(Corpus):
    """24 actors (odd ids male), 8 emotions, speech and song; ``03-01-06-01-02-01-12.wav``."""

    name = "ravdess"
    title = "RAVDESS"
    native_labels = EMOTION_NAMES  # codes 1-8 as in the file names
    speaker_gender: ClassVar[dict[str, str]] = {
        f"{a:02d}": "male" if a % 2 else "female" for a in range(1, 25)
    }
    folds: ClassVar[dict[str, Any]] = {
        "protocol": "actor-kfold",
        "n_folds": 6,
        "n_val_actors": 2,
    }  # EmoBox's folds

    def parse(self, relative: str, location: str) -> CorpusClip:
        """A RAVDESS file: its seven-field name, and its ``Actor_XX`` folder if any agrees."""
        labels = parse_name(relative)
        problem = check_actor_folder(relative, labels)
        if problem:
            raise SerError(f"{Path(relative).name}: {problem}")
        return _clip(labels, location)

    def scan(self, root: str | Path) -> CorpusScan:
        """Exactly :func:`components.data.discover.discover`, as the pipeline runs it."""
        found = discover(root)
        clips = [_clip(file.labels, file.location) for file in found.files]
        return CorpusScan(self.name, clips, list(found.rejected))
