"""The label map: each corpus's native emotion labels onto one shared label set.

The map is data (``data/label_map.yaml``, named by ``evaluate.label_map``), not code::

    labels: [neutral, happy, sad, angry, fearful, disgust, surprised]
    corpora:
      emodb: {W: angry, L: null, E: disgust, A: fearful, F: happy, T: sad, N: neutral}

Every native label of a corpus with a fixed label set must be listed; ``null`` keeps its
clips out of cross-corpus work (they are counted, never relabelled). A user's own corpus
(open label set) maps a label through its entry if it has one, else to itself when it is a
shared label, else to nothing. Shared labels are RAVDESS emotion names, so shared code =
RAVDESS code and every score reads the same class names.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from components.data.ravdess import EMOTIONS
from components.errors import SerError

CODES: dict[str, int] = {name: code for code, name in EMOTIONS.items()}


@dataclass(frozen=True)
class LabelMap:
    """The shared label set and each corpus's native label → shared label (None: left out)."""

    labels: tuple[str, ...]
    corpora: Mapping[str, Mapping[str, str | None]]

    def code(self, label: str) -> int:
        """The shared label's integer code (its RAVDESS code)."""
        return CODES[label]

    def target(self, corpus: str, label: str, open_set: bool = False) -> str | None:
        """Where a native label goes (None: nowhere, the clip is left out).

        Args:
            corpus: The corpus's name.
            label: Its native label.
            open_set: The corpus's labels are whatever its user wrote (a manifest, folders).

        Raises:
            SerError: A corpus with a fixed label set has no entry, or no entry for the label.
        """
        table = self.corpora.get(corpus)
        if table is not None and label in table:
            return table[label]
        if not open_set:
            if table is None:
                raise SerError(f"label map: no entry for corpus {corpus!r}; add corpora.{corpus} to the map")
            raise SerError(f"label map: corpus {corpus!r} has no entry for its label {label!r}")
        return label if label in self.labels else None


def parse_label_map(raw: object, where: str) -> LabelMap:
    """Check a label map read from YAML.

    Raises:
        SerError: One line naming ``where`` and the problem: no ``labels`` or ``corpora``, a
            shared label that is not an emotion name, a target outside the shared labels.
    """
    if not isinstance(raw, dict) or set(raw) != {"labels", "corpora"}:
        raise SerError(f"{where}: expected exactly the keys 'labels' and 'corpora'")
    labels = raw["labels"]
    if not isinstance(labels, list) or not labels:
        raise SerError(f"{where}: 'labels' must be a non-empty list of emotion names")
    unknown = [name for name in labels if name not in CODES]
    if unknown:
        raise SerError(f"{where}: shared label(s) {unknown} are not emotion names ({', '.join(CODES)})")
    if not isinstance(raw["corpora"], dict):
        raise SerError(f"{where}: 'corpora' must map corpus names to {{native label: shared label}}")
    corpora = {}
    for corpus, table in raw["corpora"].items():
        if not isinstance(table, dict):
            raise SerError(f"{where}: corpora.{corpus} must map native labels to shared labels")
        for native, target in table.items():
            if target is not None and target not in labels:
                raise SerError(
                    f"{where}: corpora.{corpus}.{native} maps to {target!r}, not a shared label "
                    f"({', '.join(labels)}) or null"
                )
        corpora[str(corpus)] = {str(k): v for k, v in table.items()}
    return LabelMap(tuple(labels), corpora)


def load_label_map(path: str | Path) -> LabelMap:
    """Read and check a label-map YAML file.

    Raises:
        SerError: The file is missing, not YAML, or not a valid map (see :func:`parse_label_map`).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise SerError(f"{path}: cannot read the label map ({err.strerror})") from err
    except yaml.YAMLError as err:
        raise SerError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from err
    return parse_label_map(raw, str(path))


def apply_label_map(
    labels: pd.DataFrame, label_map: LabelMap, open_sets: Iterable[str] = ()
) -> tuple[pd.DataFrame, dict[str, dict[str, int]]]:
    """Map each clip's ``native_label`` (per its ``corpus``) onto the shared set.

    Args:
        labels: A table with ``corpus`` and ``native_label`` columns.
        label_map: The map.
        open_sets: Corpora whose labels are an open set (a user's own data).

    Returns:
        ``(mapped, left_out)``: the rows whose label maps to a shared label, with ``label``
        (shared name) and ``emotion`` (its code) set, original index kept; and per corpus the
        number of clips left out by native label.
    """
    open_sets = set(open_sets)
    targets = [
        label_map.target(corpus, native, corpus in open_sets)
        for corpus, native in zip(labels["corpus"], labels["native_label"], strict=True)
    ]
    keep = pd.Series([t is not None for t in targets], index=labels.index)
    left_out: dict[str, Counter] = {}
    pairs = zip(labels["corpus"], labels["native_label"], strict=True)
    for (corpus, native), kept in zip(pairs, keep, strict=True):
        if not kept:
            left_out.setdefault(corpus, Counter())[native] += 1
    mapped = labels[keep.to_numpy()].copy()
    mapped["label"] = [t for t in targets if t is not None]
    mapped["emotion"] = [label_map.code(t) for t in mapped["label"]]
    return mapped, {corpus: dict(counts) for corpus, counts in left_out.items()}
