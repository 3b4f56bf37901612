"""TESS, the Toronto emotional speech set: ``OAF_back_angry.wav``, ``YAF_…``.

Two female speakers (OAF older, YAF younger) say "Say the word …" for 200 words in seven
emotions; the usual distribution has one folder per speaker and emotion (``OAF_angry/``).
``ps`` is pleasant surprise.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any, ClassVar

from components.data.corpora.base import Corpus, CorpusClip
from components.errors import SerError

LABELS: dict[str, str] = {
    "angry": "anger",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "happiness",
    "neutral": "neutral",
    "ps": "pleasant surprise",
    "sad": "sadness",
}
SPEAKERS: dict[str, str] = {"OAF": "female", "YAF": "female"}
_NAME = re.compile(r"^(OAF|YAF)_([A-Za-z]+)_([A-Za-z]+)\.(wav|flac)$", re.IGNORECASE)
_FOLDER = re.compile(r"^(OAF|YAF)_(.+)$", re.IGNORECASE)
_FOLDER_LABELS = {"pleasant_surprise": "ps", "pleasant_surprised": "ps", "pleasant surprise": "ps"}


class Tess(Corpus):
    """TESS: 2 speakers, so leave-one-speaker-out trains on one voice and tests on the other."""

    name = "tess"
    title = "TESS"
    native_labels = tuple(LABELS)
    label_names = LABELS
    speaker_gender = SPEAKERS
    folds: ClassVar[dict[str, Any]] = {"protocol": "leave-one-speaker-out", "n_val_actors": 0}

    def parse(self, relative: str, location: str) -> CorpusClip:
        """``OAF_back_angry.wav``; a folder ``OAF_angry`` around it must agree with the name."""
        path = PurePosixPath(relative)
        match = _NAME.match(path.name)
        if not match:
            raise SerError(f"{path.name}: not a TESS name (OAF_back_angry.wav: speaker, word, emotion)")
        speaker, word, emotion, _ = match.groups()
        speaker, emotion = speaker.upper(), emotion.lower()
        if emotion not in LABELS:
            raise SerError(f"{path.name}: emotion {emotion!r} is not TESS's ({', '.join(LABELS)})")
        folder = _FOLDER.match(path.parent.name)
        if folder:
            label = folder.group(2).lower()
            label = _FOLDER_LABELS.get(label, label)
            if folder.group(1).upper() != speaker or label != emotion:
                raise SerError(f"{relative}: folder {path.parent.name} does not match the name")
        return CorpusClip(
            corpus=self.name,
            clip_id=f"tess-{speaker}_{word.lower()}_{emotion}",
            location=location,
            speaker=speaker,
            native_label=emotion,
            gender="female",
            extras={"word": word.lower()},
        )
