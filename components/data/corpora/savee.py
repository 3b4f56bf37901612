"""SAVEE, Surrey Audio-Visual Expressed Emotion: ``DC_a01.wav`` or ``DC/a01.wav``.

Four male speakers (DC, JE, JK, KL); codes a (anger), d (disgust), f (fear), h (happiness),
n (neutral), sa (sadness), su (surprise), then the sentence number.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from components.data.corpora.base import Corpus, CorpusClip
from components.errors import SerError

LABELS: dict[str, str] = {
    "a": "anger",
    "d": "disgust",
    "f": "fear",
    "h": "happiness",
    "n": "neutral",
    "sa": "sadness",
    "su": "surprise",
}
SPEAKERS: dict[str, str] = {s: "male" for s in ("DC", "JE", "JK", "KL")}
_NAME = re.compile(r"^(?:([A-Z]{2})_)?(sa|su|a|d|f|h|n)(\d\d)\.(wav|flac)$")


class Savee(Corpus):
    """SAVEE: 4 speakers, leave-one-speaker-out folds."""

    name = "savee"
    title = "SAVEE"
    native_labels = tuple(LABELS)
    label_names = LABELS
    speaker_gender = SPEAKERS

    def parse(self, relative: str, location: str) -> CorpusClip:
        """``DC_a01.wav`` anywhere, or ``a01.wav`` inside a speaker's folder (``DC/a01.wav``)."""
        path = PurePosixPath(relative)
        match = _NAME.match(path.name)
        if not match:
            raise SerError(f"{path.name}: not a SAVEE name (DC_a01.wav, or a01.wav in a folder DC/)")
        prefix, code, number, _ = match.groups()
        folder = path.parent.name
        speaker = prefix or folder
        if speaker not in SPEAKERS:
            raise SerError(f"{relative}: no SAVEE speaker ({', '.join(SPEAKERS)}) in the name or its folder")
        if prefix and folder in SPEAKERS and folder != prefix:
            raise SerError(f"{relative}: folder {folder} does not match the speaker {prefix} of the name")
        return CorpusClip(
            corpus=self.name,
            clip_id=f"savee-{speaker}_{code}{number}",
            location=location,
            speaker=speaker,
            native_label=code,
            gender="male",
            extras={"sentence": number},
        )
