"""CREMA-D, the crowd-sourced emotional multimodal actors dataset: ``1001_DFA_ANG_XX.wav``.

Actor 1001-1091, sentence (12 three-letter codes), emotion ANG, DIS, FEA, HAP, NEU, SAD,
level LO, MD, HI or XX (unspecified). Gender and age are in ``VideoDemographics.csv``
(``ActorID,Age,Sex,Race,Ethnicity``), read when it is anywhere in the folder or zip.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import pandas as pd

from components.data.corpora.base import Corpus, CorpusClip, CorpusScan
from components.errors import SerError

LABELS: dict[str, str] = {
    "ANG": "anger",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happiness",
    "NEU": "neutral",
    "SAD": "sadness",
}
SENTENCES: tuple[str, ...] = (
    "IEO",
    "TIE",
    "IOM",
    "IWW",
    "TAI",
    "MTI",
    "IWL",
    "ITH",
    "DFA",
    "ITS",
    "TSI",
    "WSI",
)
LEVELS: tuple[str, ...] = ("LO", "MD", "HI", "XX")
ACTORS = range(1001, 1092)
DEMOGRAPHICS_FILE = "VideoDemographics.csv"
_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})\.(wav|flac)$")


def read_demographics(root: str | Path) -> dict[str, str]:
    """Actor id → ``male``/``female`` from ``VideoDemographics.csv`` under ``root``; {} if absent.

    Raises:
        SerError: The file is there but lacks the ``ActorID`` or ``Sex`` column.
    """
    root = Path(root)
    text, where = None, ""
    if root.is_dir():
        found = sorted(root.rglob(DEMOGRAPHICS_FILE))
        if found:
            text, where = found[0].read_text(encoding="utf-8", errors="replace"), str(found[0])
    elif root.suffix.lower() == ".zip" and root.is_file():
        with zipfile.ZipFile(root) as archive:
            names = [n for n in archive.namelist() if PurePosixPath(n).name == DEMOGRAPHICS_FILE]
            if names:
                text, where = archive.read(names[0]).decode("utf-8", "replace"), f"{root}::{names[0]}"
    if text is None:
        return {}
    table = pd.read_csv(io.StringIO(text), dtype=str)
    if not {"ActorID", "Sex"} <= set(table.columns):
        raise SerError(f"{where}: expected columns ActorID and Sex (found {', '.join(table.columns)})")
    sex = table["Sex"].str.strip().str.lower()
    return {
        actor.strip(): value
        for actor, value in zip(table["ActorID"], sex, strict=True)
        if value in ("male", "female")
    }


class CremaD(Corpus):
    """CREMA-D: 91 actors, 5 speaker-independent folds."""

    name = "cremad"
    title = "CREMA-D"
    native_labels = tuple(LABELS)
    label_names = LABELS
    speaker_gender: ClassVar[dict[str, str]] = {str(a): "" for a in ACTORS}
    folds: ClassVar[dict[str, Any]] = {"protocol": "actor-kfold", "n_folds": 5, "n_val_actors": 4}
    metadata_files: ClassVar[tuple[str, ...]] = (DEMOGRAPHICS_FILE,)  # the actors' genders

    def __init__(self) -> None:
        self.gender: dict[str, str] = {}

    def scan(self, root: str | Path) -> CorpusScan:
        """The clips, with each actor's gender from the demographics file when it is there."""
        self.gender = read_demographics(root)
        return super().scan(root)

    def parse(self, relative: str, location: str) -> CorpusClip:
        """A CREMA-D name such as ``1001_DFA_ANG_XX.wav`` (any folder)."""
        name = PurePosixPath(relative).name
        match = _NAME.match(name)
        if not match:
            raise SerError(f"{name}: not a CREMA-D name (actor_sentence_emotion_level: 1001_DFA_ANG_XX.wav)")
        actor, sentence, emotion, level, _ = match.groups()
        for field, value, allowed in (
            ("actor", int(actor), ACTORS),
            ("sentence", sentence, SENTENCES),
            ("emotion", emotion, tuple(LABELS)),
            ("level", level, LEVELS),
        ):
            if value not in allowed:
                shown = "1001-1091" if field == "actor" else ", ".join(allowed)
                raise SerError(f"{name}: {field} {value} is not CREMA-D's ({shown})")
        return CorpusClip(
            corpus=self.name,
            clip_id=f"cremad-{PurePosixPath(name).stem}",
            location=location,
            speaker=actor,
            native_label=emotion,
            gender=self.gender.get(actor, ""),
            extras={"sentence": sentence, "level": level},
        )
