"""Emotional speech corpora behind one interface: find the files, parse the labels, map them.

Each adapter (:class:`components.data.corpora.base.Corpus`) knows one corpus's names and
layout and its speaker-independent folds; :mod:`components.data.corpora.label_map` maps its
native labels onto the shared label set for cross-corpus work. ``ravdess`` is the pipeline's
own corpus, unchanged; ``emodb``, ``cremad``, ``tess``, ``savee`` the public ones; ``custom``
a user's manifest or emotion folders.
"""

from __future__ import annotations

from pathlib import Path

from components.data.corpora.base import Corpus
from components.data.corpora.cremad import CremaD
from components.data.corpora.custom import Custom
from components.data.corpora.emodb import EmoDB
from components.data.corpora.ravdess import Ravdess
from components.data.corpora.savee import Savee
from components.data.corpora.tess import Tess
from components.errors import SerError

CORPORA: dict[str, type[Corpus]] = {
    "ravdess": Ravdess,
    "emodb": EmoDB,
    "cremad": CremaD,
    "tess": Tess,
    "savee": Savee,
    "custom": Custom,
}


def get_corpus(name: str) -> Corpus:
    """A fresh adapter by name; any name starting ``custom`` (``custom``, ``custom-lab``) is a user's own.

    Raises:
        SerError: No adapter of that name.
    """
    if name.startswith("custom"):
        return Custom(name)
    if name not in CORPORA:
        raise SerError(f"unknown corpus {name!r}: choose one of {', '.join(CORPORA)} (or custom-<name>)")
    return CORPORA[name]()


def parse_sources(items: list[str]) -> dict[str, Path]:
    """``["emodb=PATH", "ravdess=PATH"]`` → ``{"emodb": Path, ...}``, checking names and repeats.

    Raises:
        SerError: An item is not ``NAME=PATH``, names an unknown corpus, or names one twice.
    """
    sources: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        name = name.strip().lower()
        if not sep or not name or not path:
            raise SerError(f"{item!r}: expected CORPUS=PATH, e.g. emodb=path/to/emodb")
        get_corpus(name)
        if name in sources:
            raise SerError(f"corpus {name!r} is named twice")
        sources[name] = Path(path)
    return sources
