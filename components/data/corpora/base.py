"""What every corpus adapter shares: a clip's labels, the scan of a folder or zip, the clip table.

An adapter knows one corpus's file names and layout: :meth:`Corpus.parse` turns a file's path
(relative to the corpus root) into a :class:`CorpusClip` or raises a :class:`SerError` saying
what is wrong with the name. :meth:`Corpus.scan` walks a folder or zip and keeps every clip
that parses, and :func:`clip_table` reads each kept file once into the table the feature
caches are built from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from components.data.discover import list_audio, read_bytes
from components.errors import SerError

UNKNOWN_SPEAKER = -1  # the ``actor`` number of a clip whose speaker the corpus does not say
CLIP_TABLE_COLUMNS: tuple[str, ...] = (
    "corpus",
    "clip_id",
    "location",
    "content_hash",
    "speaker",
    "actor",
    "gender",
    "native_label",
    "emotion",
    "vocal_channel",
    "intensity",
    "statement",
    "repetition",
)


@dataclass(frozen=True)
class CorpusClip:
    """One clip of a corpus and the labels its name (or manifest) gives.

    Attributes:
        corpus: The adapter's name, e.g. ``emodb``.
        clip_id: Unique across every corpus (other corpora than RAVDESS prefix their name).
        location: A path, or ``archive.zip::member``.
        speaker: The corpus's own speaker id, e.g. ``03``; ``""`` when unknown.
        native_label: The emotion as the corpus writes it, e.g. ``W`` (EmoDB anger).
        gender: ``male``, ``female`` or ``""`` when unknown.
        extras: Further labels the name carries, e.g. ``{"text": "a01", "take": "a"}``.
    """

    corpus: str
    clip_id: str
    location: str
    speaker: str
    native_label: str
    gender: str = ""
    extras: Mapping[str, str] = field(default_factory=dict)


@dataclass
class CorpusScan:
    """What a scan found: the clips, and the files left out with the reason."""

    corpus: str
    clips: list[CorpusClip] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)


class Corpus:
    """A corpus adapter. Subclasses set the class attributes and :meth:`parse`.

    Attributes:
        name: Short lower-case name, used on the command line (``emodb=PATH``).
        title: What to call it in reports.
        native_labels: The emotion labels in the corpus's own spelling, in code order
            (code ``i + 1`` in feature tables); None for an open set (a user's own data).
        label_names: Native label → its English name, where the spelling is a code
            (EmoDB ``W`` → ``anger``): what a score on the native label set calls the class.
        speaker_gender: The speakers the corpus defines and their gender.
        folds: The speaker-independent protocol the corpus is scored with by default:
            ``{"protocol": ..., **settings}`` for :func:`components.evaluation.protocols.make_splits`.
        metadata_files: Names of the files besides the audio that :meth:`scan` reads labels from
            (anywhere under the root): ingest copies them with the audio.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    native_labels: ClassVar[tuple[str, ...] | None] = None
    label_names: ClassVar[Mapping[str, str]] = {}
    speaker_gender: ClassVar[Mapping[str, str]] = {}
    folds: ClassVar[Mapping[str, Any]] = {"protocol": "leave-one-speaker-out", "n_val_actors": 1}
    metadata_files: ClassVar[tuple[str, ...]] = ()

    def parse(self, relative: str, location: str) -> CorpusClip:
        """The clip a file is, from its path relative to the corpus root.

        Raises:
            SerError: The name is not one of this corpus's (the message says why, no location).
        """
        raise NotImplementedError

    def scan(self, root: str | Path) -> CorpusScan:
        """Every clip of this corpus under a folder (recursively) or inside a zip.

        A file is rejected, with its reason, when its name does not parse or its clip id was
        already seen (the first location in sorted order is kept).

        Raises:
            SerError: ``root`` is not a folder or a readable zip.
        """
        locations, relatives, unlisted = list_audio(root, corpus=self.title or self.name)
        result = CorpusScan(self.name, rejected=list(unlisted))
        seen: dict[str, str] = {}
        for location, relative in zip(locations, relatives, strict=True):
            try:
                clip = self.parse(relative.replace("\\", "/"), location)
            except SerError as err:
                result.rejected.append((location, str(err)))
                continue
            if clip.clip_id in seen:
                result.rejected.append(
                    (location, f"duplicate clip {clip.clip_id} (also at {seen[clip.clip_id]})")
                )
                continue
            seen[clip.clip_id] = location
            result.clips.append(clip)
        return result

    def speaker_number(self, speaker: str) -> int:
        """The integer the feature tables store as ``actor``: the speaker id if it is a number."""
        if not speaker:
            return UNKNOWN_SPEAKER
        if speaker.isdigit():
            return int(speaker)
        ordered = sorted(self.speaker_gender)
        if speaker not in ordered:
            raise SerError(f"{self.name}: speaker {speaker!r} has no number (known: {', '.join(ordered)})")
        return ordered.index(speaker) + 1

    def label_name(self, native_label: str) -> str:
        """What a score on the corpus's native label set calls a label (the label itself if no name)."""
        return self.label_names.get(native_label, native_label)

    def label_code(self, native_label: str) -> int:
        """The integer the feature tables store as ``emotion``: the label's place, from 1."""
        if self.native_labels is None or native_label not in self.native_labels:
            raise SerError(f"{self.name}: {native_label!r} is not one of its labels")
        return self.native_labels.index(native_label) + 1


def clip_table(corpus: Corpus, scan: CorpusScan) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Read each scanned clip once (for its content hash) into the table featurize takes.

    The table has :data:`CLIP_TABLE_COLUMNS`: the feature caches' label columns (``actor`` is
    the speaker number, ``emotion`` the native label's code, ``vocal_channel`` 1, the RAVDESS
    fields the others do not have 0) plus ``corpus``, ``speaker`` and ``native_label``.

    Returns:
        ``(clips, unreadable)``: the table sorted by clip id, and ``(location, reason)`` for
        files that could not be read.
    """
    rows, unreadable = [], []
    for clip in scan.clips:
        try:
            data = read_bytes(clip.location)
        except SerError as err:
            unreadable.append((clip.location, str(err)))
            continue
        if not data:
            unreadable.append((clip.location, "the file is empty (0 bytes)"))
            continue
        extras = clip.extras
        rows.append(
            {
                "corpus": clip.corpus,
                "clip_id": clip.clip_id,
                "location": clip.location,
                "content_hash": hashlib.sha256(data).hexdigest(),
                "speaker": clip.speaker,
                "actor": corpus.speaker_number(clip.speaker),
                "gender": clip.gender,
                "native_label": clip.native_label,
                "emotion": corpus.label_code(clip.native_label),
                "vocal_channel": int(extras.get("vocal_channel", 1)),
                "intensity": int(extras.get("intensity", 0)),
                "statement": int(extras.get("statement", 0)),
                "repetition": int(extras.get("repetition", 0)),
            }
        )
    table = pd.DataFrame(rows, columns=list(CLIP_TABLE_COLUMNS))
    return table.sort_values("clip_id", kind="stable").reset_index(drop=True), unreadable
