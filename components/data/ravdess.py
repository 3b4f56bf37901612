"""RAVDESS labels and the file-name parser.

A RAVDESS file name has seven two-digit fields,
``modality-vocal_channel-emotion-intensity-statement-repetition-actor``, for example
``03-01-06-01-02-01-12.wav``: audio-only, speech, fearful, normal intensity,
"Dogs are sitting by the door", first repetition, actor 12 (even ids are female).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath

from components.errors import SerError

EMOTIONS: dict[int, str] = {
    1: "neutral",
    2: "calm",
    3: "happy",
    4: "sad",
    5: "angry",
    6: "fearful",
    7: "disgust",
    8: "surprised",
}
EMOTION_NAMES: tuple[str, ...] = tuple(EMOTIONS.values())
MODALITIES: dict[int, str] = {1: "audio-video", 2: "video-only", 3: "audio-only"}
VOCAL_CHANNELS: dict[int, str] = {1: "speech", 2: "song"}
INTENSITIES: dict[int, str] = {1: "normal", 2: "strong"}
STATEMENTS: dict[int, str] = {1: "Kids are talking by the door", 2: "Dogs are sitting by the door"}
REPETITIONS: tuple[int, ...] = (1, 2)
ACTORS: tuple[int, ...] = tuple(range(1, 25))
SONG_EMOTIONS: tuple[int, ...] = (1, 2, 3, 4, 5, 6)  # song has no disgust or surprised
ACTORS_WITHOUT_SONG: tuple[int, ...] = (18,)
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac")

FIELDS: tuple[str, ...] = (
    "modality",
    "vocal_channel",
    "emotion",
    "intensity",
    "statement",
    "repetition",
    "actor",
)
_ALLOWED: dict[str, tuple[int, ...]] = {
    "modality": tuple(MODALITIES),
    "vocal_channel": tuple(VOCAL_CHANNELS),
    "emotion": tuple(EMOTIONS),
    "intensity": tuple(INTENSITIES),
    "statement": tuple(STATEMENTS),
    "repetition": REPETITIONS,
    "actor": ACTORS,
}
_FIELD_RE = re.compile(r"[0-9]{2}")  # fullmatch: "$" would pass "01\n", "\d" Arabic-Indic digits


@dataclass(frozen=True)
class ClipLabels:
    """The labels one RAVDESS file name carries."""

    modality: int
    vocal_channel: int
    emotion: int
    intensity: int
    statement: int
    repetition: int
    actor: int

    @property
    def clip_id(self) -> str:
        """The seven-field stem, unique across the corpus (speech and song differ in field 2)."""
        return "-".join(f"{getattr(self, name):02d}" for name in FIELDS)

    @property
    def gender(self) -> str:
        """``male`` for odd actor ids, ``female`` for even ones."""
        return "male" if self.actor % 2 else "female"

    @property
    def channel_name(self) -> str:
        """``speech`` or ``song``."""
        return VOCAL_CHANNELS[self.vocal_channel]

    @property
    def emotion_name(self) -> str:
        """The emotion's name, e.g. ``fearful``."""
        return EMOTIONS[self.emotion]

    def as_dict(self) -> dict[str, int | str]:
        """Plain columns for a metadata table."""
        row: dict[str, int | str] = {name: getattr(self, name) for name in FIELDS}
        row.update(
            clip_id=self.clip_id,
            gender=self.gender,
            channel_name=self.channel_name,
            emotion_name=self.emotion_name,
        )
        return row


def parse_name(path: str | PurePath) -> ClipLabels:
    """Parse a RAVDESS file name into its labels.

    Args:
        path: A file name or path; only the final component is read.

    Returns:
        The typed labels.

    Raises:
        SerError: The name does not have exactly seven two-digit fields, or a field holds a
            code RAVDESS does not define, or the combination is impossible (neutral at strong
            intensity, song with disgust or surprised). The message names the file and field.
    """
    name = PurePath(str(path)).name
    stem, dot, ext = name.rpartition(".")
    name = name if name.isprintable() else ascii(name)  # a newline in a name must not break the message
    if not dot or f".{ext.lower()}" not in AUDIO_EXTENSIONS:
        raise SerError(f"{name}: not a RAVDESS audio file name (expected a .wav or .flac file)")
    parts = stem.split("-")
    if len(parts) != len(FIELDS):
        raise SerError(
            f"{name}: expected {len(FIELDS)} two-digit fields ({'-'.join(FIELDS)}), found {len(parts)}"
        )
    values: dict[str, int] = {}
    for field, part in zip(FIELDS, parts, strict=True):
        if not _FIELD_RE.fullmatch(part):
            raise SerError(f"{name}: field '{field}' is {part!r}, expected two digits")
        code = int(part)
        if code not in _ALLOWED[field]:
            allowed = ", ".join(f"{c:02d}" for c in _ALLOWED[field])
            raise SerError(f"{name}: field '{field}' has unknown code {part} (allowed: {allowed})")
        values[field] = code
    labels = ClipLabels(**values)
    if labels.emotion == 1 and labels.intensity == 2:
        raise SerError(f"{name}: field 'intensity' is 02 (strong) but neutral has only normal")
    if labels.vocal_channel == 2 and labels.emotion not in SONG_EMOTIONS:
        raise SerError(
            f"{name}: field 'emotion' is {labels.emotion:02d} ({labels.emotion_name}) "
            "but RAVDESS song has no disgust or surprised"
        )
    return labels


def expected_clips(vocal_channel: int) -> list[ClipLabels]:
    """Every clip RAVDESS defines for one actor, in one vocal channel (actor field 0 left at 1).

    Speech has 60 clips per actor and song 44.
    """
    emotions = tuple(EMOTIONS) if vocal_channel == 1 else SONG_EMOTIONS
    return [
        ClipLabels(3, vocal_channel, emotion, intensity, statement, repetition, 1)
        for emotion in emotions
        for intensity in ((1,) if emotion == 1 else (1, 2))
        for statement in STATEMENTS
        for repetition in REPETITIONS
    ]
