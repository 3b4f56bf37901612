"""A user's own recordings: a CSV manifest, or one folder per emotion label.

- Manifest: a ``.csv`` file with columns ``path,emotion,speaker`` and optionally ``gender``;
  paths are relative to the manifest's folder. An empty ``speaker`` means unknown.
- Folders: ``ROOT/<emotion>/**/*.wav``; the speakers are unknown.

Protocols that keep speakers apart refuse a table with unknown speakers instead of mixing
them (see :mod:`components.evaluation.protocols`); cross-corpus testing needs no speakers.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import pandas as pd

from components.data.corpora.base import Corpus, CorpusClip, CorpusScan
from components.data.ravdess import AUDIO_EXTENSIONS
from components.errors import SerError

MANIFEST_COLUMNS: tuple[str, ...] = ("path", "emotion", "speaker")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class Custom(Corpus):
    """Your own data: labels are whatever the manifest or folders say (an open label set)."""

    name = "custom"
    title = "custom data"

    def __init__(self, name: str = "custom") -> None:
        self.name = name  # several of a user's corpora can sit side by side: mine=…, theirs=…
        self.native_labels: tuple[str, ...] = ()
        self.speaker_gender: dict[str, str] = {}

    def parse(self, relative: str, location: str) -> CorpusClip:
        """A file under ``ROOT/<emotion>/``: the first folder of its path is its label."""
        parts = PurePosixPath(relative).parts
        if len(parts) < 2:
            raise SerError(f"{relative}: not inside an emotion folder (expected ROOT/<emotion>/clip.wav)")
        return self._clip(relative, location, parts[0].strip().lower(), "", "")

    def _clip(self, relative: str, location: str, emotion: str, speaker: str, gender: str) -> CorpusClip:
        stem = _SAFE.sub("_", str(PurePosixPath(relative).with_suffix("")))
        return CorpusClip(self.name, f"{self.name}-{stem}", location, speaker, emotion, gender)

    def scan(self, root: str | Path) -> CorpusScan:
        """A manifest (``root`` is a .csv file) or a folder of emotion folders."""
        root = Path(root)
        result = self._scan_manifest(root) if root.suffix.lower() == ".csv" else super().scan(root)
        self.native_labels = tuple(sorted({clip.native_label for clip in result.clips}))
        speakers = {clip.speaker: clip.gender for clip in result.clips if clip.speaker}
        self.speaker_gender = dict(sorted(speakers.items()))
        return result

    def _scan_manifest(self, manifest: Path) -> CorpusScan:
        if not manifest.is_file():
            raise SerError(f"{manifest}: no such manifest file")
        try:
            table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
        except (OSError, ValueError) as err:
            raise SerError(f"{manifest}: not a readable CSV manifest ({err})") from err
        missing = [c for c in MANIFEST_COLUMNS if c not in table.columns]
        if missing:
            raise SerError(
                f"{manifest}: the manifest lacks column(s) {', '.join(missing)} "
                "(expected path,emotion,speaker[,gender])"
            )
        result = CorpusScan(self.name)
        seen: dict[str, str] = {}
        for row in table.itertuples(index=False):
            path = manifest.parent / row.path
            where = f"{manifest}: row {row.path!r}"
            gender = getattr(row, "gender", "").strip().lower()
            if not row.emotion.strip():
                result.rejected.append((str(path), f"{where} has no emotion"))
            elif path.suffix.lower() not in AUDIO_EXTENSIONS:
                result.rejected.append((str(path), f"{where} is not a .wav or .flac file"))
            elif not path.is_file():
                result.rejected.append((str(path), f"{where}: no such file"))
            elif gender not in ("", "male", "female"):
                result.rejected.append((str(path), f"{where}: gender {gender!r} is not male or female"))
            else:
                clip = self._clip(
                    row.path, str(path), row.emotion.strip().lower(), row.speaker.strip(), gender
                )
                if clip.clip_id in seen:
                    result.rejected.append(
                        (str(path), f"duplicate clip {clip.clip_id} (also at {seen[clip.clip_id]})")
                    )
                else:
                    seen[clip.clip_id] = str(path)
                    result.clips.append(clip)
        return result
