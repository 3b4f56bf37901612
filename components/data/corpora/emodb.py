"""EmoDB, the Berlin Database of Emotional Speech: ``03a01Fa.wav``.

Speaker ``03``, text ``a01``, emotion ``F`` (German initials), take ``a``. Ten speakers
(03, 10, 11, 12, 15 male; 08, 09, 13, 14, 16 female), ten texts, seven emotions.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import ClassVar

from components.data.corpora.base import Corpus, CorpusClip
from components.errors import SerError

LABELS: dict[str, str] = {
    "W": "anger (Ärger)",
    "L": "boredom (Langeweile)",
    "E": "disgust (Ekel)",
    "A": "fear (Angst)",
    "F": "happiness (Freude)",
    "T": "sadness (Trauer)",
    "N": "neutral",
}
SPEAKERS: dict[str, str] = {
    **{s: "male" for s in ("03", "10", "11", "12", "15")},
    **{s: "female" for s in ("08", "09", "13", "14", "16")},
}
TEXTS: tuple[str, ...] = ("a01", "a02", "a04", "a05", "a07", "b01", "b02", "b03", "b09", "b10")
_NAME = re.compile(r"^(\d\d)([ab]\d\d)([A-Z])([a-z])\.(wav|flac)$", re.IGNORECASE)


class EmoDB(Corpus):
    """EmoDB: 10 speakers, leave-one-speaker-out folds."""

    name = "emodb"
    title = "EmoDB"
    native_labels = tuple(LABELS)
    label_names: ClassVar[dict[str, str]] = {code: name.split(" (")[0] for code, name in LABELS.items()}
    speaker_gender = SPEAKERS

    def parse(self, relative: str, location: str) -> CorpusClip:
        """An EmoDB name such as ``03a01Fa.wav`` (any folder)."""
        name = PurePosixPath(relative).name
        match = _NAME.match(name)
        if not match:
            raise SerError(f"{name}: not an EmoDB name (speaker, text, emotion, take: 03a01Fa.wav)")
        speaker, text, emotion, take, _ = match.groups()
        if speaker not in SPEAKERS:
            raise SerError(
                f"{name}: speaker {speaker} is not an EmoDB speaker ({', '.join(sorted(SPEAKERS))})"
            )
        if text.lower() not in TEXTS:
            raise SerError(f"{name}: text {text} is not an EmoDB text ({', '.join(TEXTS)})")
        if emotion not in LABELS:
            raise SerError(f"{name}: emotion code {emotion} is not EmoDB's ({', '.join(LABELS)})")
        return CorpusClip(
            corpus=self.name,
            clip_id=f"emodb-{PurePosixPath(name).stem}",
            location=location,
            speaker=speaker,
            native_label=emotion,
            gender=SPEAKERS[speaker],
            extras={"text": text.lower(), "take": take},
        )
