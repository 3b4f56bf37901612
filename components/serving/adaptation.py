"""Speaker adaptation at prediction time: each speaker's clips re-centred on the training mean.

Voices differ more than one voice differs between emotions, so the features of a new speaker sit
away from where the model learnt the emotions. With a few unlabelled clips of that speaker, their
mean tells how far: every clip of the speaker is shifted by ``training mean - speaker mean`` and
then goes through the model's own scaler and classifier. Only the mean moves; the spread stays
the training data's (z-scoring with the speaker's own sd collapses with few clips:
reports/speaker_adaptation.md). A speaker with fewer than ``min_clips`` clips gets the plain model.

The training mean is recorded with the model (``EmotionPredictor.info["speaker_stats"]``) when it
is published; a model without it cannot adapt and says so.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.errors import SerError

STATS_KEY = "speaker_stats"  # where a predictor's info records the training mean
SPEAKER_GROUP = "speaker"  # the named group of a --speaker-pattern
ADAPTATION_COLUMN = "adaptation"  # the pyfunc's output column saying what each row got


def training_stats(stats: np.ndarray, min_clips: int) -> dict[str, Any]:
    """What a published model records for adaptation: the mean feature vector of its training clips.

    Args:
        stats: ``(n_clips, n_features)`` scalar features of the clips the model was fitted on.
        min_clips: The fewest clips of a speaker adaptation uses (``evaluate.speaker_min_clips``).
    """
    values = np.asarray(stats, dtype=np.float64)
    return {"mean": values.mean(axis=0).tolist(), "n_clips": len(values), "min_clips": int(min_clips)}


def recorded_stats(predictor: Any, what: str = "the model") -> dict[str, Any]:
    """The training statistics a predictor recorded; a clear error when it has none.

    Raises:
        SerError: The model is not ours, reads no scalar features, or predates adaptation.
    """
    info = getattr(predictor, "info", None)
    stats = info.get(STATS_KEY) if isinstance(info, dict) else None
    if not stats or not getattr(predictor, "stats_sets", ()):
        raise SerError(
            f"{what}: no training statistics recorded with it (published before speaker adaptation, "
            "or a model of other inputs): speaker adaptation needs a model published by this version "
            "(dvc repro / make run); drop the --speaker-* options to use it plain"
        )
    return stats


def speaker_offset(speaker_stats: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The shift that moves a speaker's mean onto the training mean: ``reference - mean(clips)``."""
    return np.asarray(reference, dtype=np.float64) - np.asarray(speaker_stats, dtype=np.float64).mean(axis=0)


@dataclass(frozen=True)
class SpeakerNote:
    """What one speaker got: adapted with ``n_clips`` clips, or the plain model and why."""

    speaker: str | None
    n_clips: int
    adapted: bool
    min_clips: int

    @property
    def reason(self) -> str:
        """The short text of the output column and of the stderr line."""
        if self.adapted:
            return f"adapted ({self.n_clips} clips)"
        if self.speaker is None:
            return "plain (no speaker given)"
        return f"plain ({self.n_clips} clips, fewer than {self.min_clips})"

    def line(self) -> str:
        """One line for stderr or a log."""
        who = "files with no speaker" if self.speaker is None else f"speaker {self.speaker}"
        return f"{who}: {self.reason}"


def adapt_by_speaker(
    stats: np.ndarray, speakers: Sequence[Hashable | None], reference: np.ndarray, min_clips: int
) -> tuple[np.ndarray, dict[Hashable | None, SpeakerNote]]:
    """Re-centre each speaker's rows on ``reference``; speakers with too few rows stay as they are.

    Args:
        stats: ``(n_clips, n_features)`` features in the model's column order.
        speakers: One id per row; None for a row of unknown speaker (never adapted).
        reference: The training mean (:func:`training_stats`).
        min_clips: The fewest rows of a speaker that are adapted.

    Returns:
        The adapted copy, and a note per speaker (in order of first appearance).

    Raises:
        SerError: The reference does not fit the features (a model recorded with other columns).
    """
    values = np.asarray(stats, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != reference.shape[-1] or len(values) != len(speakers):
        raise SerError(
            f"speaker adaptation: features of shape {values.shape} do not fit the model's training mean "
            f"of {reference.shape[-1]} values and {len(speakers)} speaker ids"
        )
    out = values.copy()
    ids = np.array([None if s is None else str(s) for s in speakers], dtype=object)
    notes: dict[Hashable | None, SpeakerNote] = {}
    for speaker in dict.fromkeys(ids.tolist()):
        rows = np.flatnonzero(ids == speaker) if speaker is not None else np.flatnonzero(pd.isna(ids))
        adapted = speaker is not None and len(rows) >= min_clips
        if adapted:
            out[rows] += speaker_offset(values[rows], reference)
        notes[speaker] = SpeakerNote(speaker, len(rows), adapted, min_clips)
    return out, notes


def predict_adapted(
    predictor: Any,
    signals: Sequence[tuple[np.ndarray, int]],
    speakers: Sequence[Hashable | None],
    min_clips: int,
) -> pd.DataFrame:
    """The predictor's table for raw signals, each speaker's clips adapted, plus an ``adaptation`` column.

    Raises:
        SerError: The predictor recorded no training statistics.
    """
    reference = np.asarray(recorded_stats(predictor)["mean"])
    prepared = [predictor.prepare(signal, rate) for signal, rate in signals]
    inputs = predictor.inputs(prepared)
    ids = [None if _missing(s) else str(s) for s in speakers]
    inputs["stats"], notes = adapt_by_speaker(inputs["stats"], ids, reference, min_clips)
    table = probability_table(predictor, predictor.model.predict_proba(inputs))
    table[ADAPTATION_COLUMN] = [notes[s].reason for s in ids]
    return table


def probability_table(predictor: Any, proba: np.ndarray) -> pd.DataFrame:
    """Label, confidence and ``prob_<emotion>`` columns: what every way of predicting answers."""
    names = predictor.class_names
    table = pd.DataFrame(proba, columns=[f"prob_{name}" for name in names])
    best = proba.argmax(axis=1)
    table.insert(0, "confidence", proba[np.arange(len(proba)), best])
    table.insert(0, "label", [names[i] for i in best])
    return table


class FeatureCache:
    """Scorers over raw signals that remember each signal's features, so a second pass needs no extraction.

    Files are scored twice when adapting: once plain (which also yields the speaker's features and
    the fallback result), once shifted. Signals are keyed by their samples and rate.
    """

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor
        self.rows: dict[str, dict[str, np.ndarray | None]] = {}

    def features(self, signals: Sequence[tuple[np.ndarray, int]]) -> dict[str, Any]:
        """The model's X dict for raw signals, extracted once per distinct signal."""
        keys = [_key(signal, rate) for signal, rate in signals]
        todo = [i for i, key in enumerate(keys) if key not in self.rows]
        if todo:
            fresh = self.predictor.inputs([self.predictor.prepare(*signals[i]) for i in todo])
            for j, i in enumerate(todo):
                self.rows[keys[i]] = {
                    name: None if value is None else value[j] for name, value in fresh.items()
                }
        rows = [self.rows[key] for key in keys]
        return {
            name: None if rows[0][name] is None else np.stack([row[name] for row in rows]) for name in rows[0]
        }

    def stats(self) -> np.ndarray:
        """Every remembered signal's scalar features (one row each)."""
        return np.stack([row["stats"] for row in self.rows.values()])

    def scorer(self, offset: np.ndarray | None = None) -> Any:
        """A ``predict_files`` scorer: features shifted by ``offset`` (None: plain) through the model."""

        def score(signals: list[tuple[np.ndarray, int]]) -> pd.DataFrame:
            inputs = self.features(signals)
            if offset is not None:
                inputs["stats"] = inputs["stats"] + offset
            return probability_table(self.predictor, self.predictor.model.predict_proba(inputs))

        return score


def predict_files_by_speaker(
    paths: Sequence[str | Path],
    speakers: Sequence[str | None],
    predictor: Any,
    min_clips: int,
    **predict_options: Any,
) -> tuple[list[Any], list[SpeakerNote]]:
    """``predict_files`` speaker by speaker, each speaker's clips re-centred on the training mean.

    A speaker's statistics are the mean over every scored window of their readable files (the
    files being predicted: unlabelled, transductive); ``min_clips`` counts readable files.

    Args:
        paths: Audio files.
        speakers: One speaker id per path; None: unknown (the plain model).
        predictor: An ``EmotionPredictor`` that recorded training statistics.
        min_clips: Speakers with fewer readable files get the plain model.
        **predict_options: ``clip_dur``, ``hop_dur``, ``batch_size``, ``checks``… of ``predict_files``.

    Returns:
        One result per path, in order, each with its ``speaker`` and ``adaptation`` (the note's
        reason; None for a file that could not be scored), and one note per speaker.

    Raises:
        SerError: The predictor recorded no training statistics.
    """
    from components.serving.predict import predict_files

    reference = np.asarray(recorded_stats(predictor)["mean"], dtype=np.float64)
    results: list[Any] = [None] * len(paths)
    notes: list[SpeakerNote] = []
    groups: dict[str | None, list[int]] = {}
    for index, speaker in enumerate(speakers):
        groups.setdefault(speaker, []).append(index)
    for speaker, indices in groups.items():
        cache = FeatureCache(predictor)
        chosen = [paths[i] for i in indices]
        found = predict_files(chosen, cache.scorer(), **predict_options)
        n_clips = sum(result.label is not None for result in found)
        adapted = speaker is not None and n_clips >= min_clips and bool(cache.rows)
        if adapted:
            offset = speaker_offset(cache.stats(), reference)
            found = predict_files(chosen, cache.scorer(offset), **predict_options)
        note = SpeakerNote(speaker, n_clips, adapted, min_clips)
        notes.append(note)
        for i, result in zip(indices, found, strict=True):
            result.speaker = speaker
            result.adaptation = note.reason if result.label is not None else None  # unreadable: no model
            results[i] = result
    return results, notes


def predict_by_speaker(
    loaded: Any,
    paths: Sequence[str | Path],
    pattern: str | None = None,
    source: str | None = None,
    min_clips: int | None = None,
    **predict_options: Any,
) -> tuple[list[Any], list[SpeakerNote]]:
    """``ser predict --speaker-*`` and ``predict-batch``: assign speakers, :func:`predict_files_by_speaker`.

    Args:
        loaded: A ``components.registry.model_io.LoadedModel``.
        paths: Audio files.
        pattern: A regular expression with a ``speaker`` group, searched in each file name.
        source: ``folder`` (one folder per speaker) or a CSV with ``path`` and ``speaker`` columns.
        min_clips: The fewest files of a speaker to adapt; None: the minimum recorded with the model.
        **predict_options: Passed on to ``predict_files``.

    Raises:
        SerError: No or two ways of assigning speakers, a bad pattern or list, or a model without
            recorded training statistics.
    """
    speakers = assign_speakers(paths, pattern, source)
    stats = recorded_stats(loaded.predictor, loaded.uri)
    minimum = int(stats["min_clips"] if min_clips is None else min_clips)
    if minimum < 1:
        raise SerError(f"--speaker-min-clips {minimum}: give at least 1")
    return predict_files_by_speaker(paths, speakers, loaded.predictor, minimum, **predict_options)


def speakers_from_pattern(paths: Sequence[str | Path], pattern: str) -> list[str | None]:
    """The ``speaker`` group of ``pattern`` searched in each file name (None where it does not match).

    Raises:
        SerError: The pattern is not a regular expression or has no ``(?P<speaker>...)`` group.
    """
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise SerError(f"--speaker-pattern {pattern!r}: not a regular expression ({err})") from err
    if SPEAKER_GROUP not in compiled.groupindex:
        raise SerError(
            f"--speaker-pattern {pattern!r}: needs a named group (?P<speaker>...), "
            r"e.g. '(?P<speaker>\d\d)\.wav$'"
        )
    found = [compiled.search(Path(path).name) for path in paths]
    return [match[SPEAKER_GROUP] if match and match[SPEAKER_GROUP] else None for match in found]


def speakers_from_folder(paths: Sequence[str | Path]) -> list[str]:
    """Each file's parent folder as its speaker: one folder per speaker."""
    return [str(Path(path).resolve().parent) for path in paths]


def speakers_from_csv(paths: Sequence[str | Path], table: str | Path) -> list[str | None]:
    """Speakers listed in a CSV with ``path`` and ``speaker`` columns (paths relative to the CSV's folder).

    Raises:
        SerError: The CSV is unreadable or lacks either column.
    """
    table = Path(table)
    try:
        listed = pd.read_csv(table, dtype=str)
    except (OSError, ValueError) as err:
        raise SerError(f"{table}: cannot read the speaker list ({err})") from err
    missing = {"path", SPEAKER_GROUP} - set(listed.columns)
    if missing:
        raise SerError(
            f"{table}: the speaker list needs columns path and speaker (missing {', '.join(sorted(missing))})"
        )
    by_path = {
        str((table.parent / Path(str(p)).expanduser()).resolve()): s
        for p, s in zip(listed["path"], listed[SPEAKER_GROUP], strict=True)
        if not _missing(p) and not _missing(s)
    }
    return [by_path.get(str(Path(path).resolve())) for path in paths]


def assign_speakers(
    paths: Sequence[str | Path], pattern: str | None = None, source: str | None = None
) -> list[str | None]:
    """Speakers of ``paths`` from a file-name pattern, or ``source``: ``folder`` or a CSV list.

    Raises:
        SerError: Both or neither are given, or the one given is unusable.
    """
    if (pattern is None) == (source is None):
        raise SerError("say how files share a speaker with one of --speaker-pattern or --speaker-from")
    if pattern is not None:
        return speakers_from_pattern(paths, pattern)
    if source == "folder":
        return speakers_from_folder(paths)
    if not Path(str(source)).is_file():
        raise SerError(
            f"--speaker-from {source!r}: give 'folder' or a CSV file with path and speaker columns"
        )
    return speakers_from_csv(paths, str(source))


def _key(signal: np.ndarray, rate: int) -> str:
    digest = hashlib.blake2b(np.ascontiguousarray(signal).tobytes(), digest_size=16)
    digest.update(str(int(rate)).encode())
    return digest.hexdigest()


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value == ""
