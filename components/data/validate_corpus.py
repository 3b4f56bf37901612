"""Data checks on a clips table of another corpus than RAVDESS: its own Great Expectations suite.

RAVDESS's suite (:mod:`components.data.validate`) knows its seven-field design; another corpus's
suite states what its adapter (:mod:`components.data.corpora`) knows: its emotion labels and
their codes, its speaker ids, and the same audio checks as RAVDESS's. Per-speaker clip counts
are warnings, never rejections: a corpus's speakers need not have the same number of clips, but
one with far fewer than the others is worth a look.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import great_expectations as gx
import pandas as pd

from components.data.corpora.base import Corpus, CorpusClip, CorpusScan
from components.data.discover import AudioFile, Discovery
from components.data.validate import SUITE_NAME, build_suite, find_problems, run_suite, sorted_report
from components.data.validation_report import ValidationReport

AUDIO_CHECK_COLUMNS = ("sampling_rate", "audio_dur", "peak", "silent_share", "clipped_share")
FEW_CLIPS_SHARE = 0.5  # a speaker with fewer clips than this share of the median speaker's is warned of


@dataclass(frozen=True)
class CorpusLabels:
    """A corpus clip's labels in the clips table's columns (RAVDESS's fields where it has none).

    ``emotion`` is the native label's code (its place in the adapter's labels, from 1), ``actor``
    the speaker's number, ``emotion_name`` the native label; RAVDESS's intensity, statement and
    repetition are 0, ``vocal_channel`` 1 (speech).
    """

    clip_id: str
    actor: int
    emotion: int
    gender: str
    native_label: str

    def as_dict(self) -> dict[str, int | str]:
        """Plain columns for a metadata table (as :meth:`ClipLabels.as_dict`)."""
        return {
            "modality": 3,
            "vocal_channel": 1,
            "emotion": self.emotion,
            "intensity": 0,
            "statement": 0,
            "repetition": 0,
            "actor": self.actor,
            "clip_id": self.clip_id,
            "gender": self.gender,
            "channel_name": "speech",
            "emotion_name": self.native_label,
        }


def corpus_discovery(corpus: Corpus, scan: CorpusScan) -> Discovery:
    """A corpus's scan as :func:`components.data.metadata.build_metadata` takes it."""

    def labels(clip: CorpusClip) -> CorpusLabels:
        number = corpus.speaker_number(clip.speaker)
        code = corpus.label_code(clip.native_label)
        return CorpusLabels(clip.clip_id, number, code, clip.gender, clip.native_label)

    return Discovery([AudioFile(clip.location, labels(clip)) for clip in scan.clips], list(scan.rejected))


def build_corpus_suite(
    corpus: Corpus, params: Mapping[str, Any], min_speaker_clips: float = 0
) -> gx.ExpectationSuite:
    """The expectations on one corpus's clips table (with :func:`add_speaker_counts` applied).

    Args:
        corpus: The adapter, after its scan (a user's corpus learns its labels from it).
        params: The ``validate`` section of ``params.yaml``.
        min_speaker_clips: Fewer clips of a speaker than this is a warning.
    """
    e = gx.expectations
    labels = list(corpus.native_labels or ())
    checks = [
        e.ExpectColumnValuesToBeInSet(
            column="emotion_name",
            value_set=labels,
            meta={"reason": f"emotion {{value!r}} is not one of {corpus.name}'s ({', '.join(labels)})"},
        ),
        e.ExpectColumnPairValuesToBeInSet(
            column_A="emotion_name",
            column_B="emotion",
            value_pairs_set=[(label, corpus.label_code(label)) for label in labels],
            meta={"reason": "emotion code {emotion} does not belong to {emotion_name!r}"},
        ),
        e.ExpectColumnValuesToBeUnique(column="clip_id", meta={"reason": "duplicate clip id {clip_id}"}),
    ]
    if corpus.speaker_gender:  # a user's folders name no speakers: nothing to check against
        numbers = sorted(corpus.speaker_number(speaker) for speaker in corpus.speaker_gender)
        speakers = ", ".join(sorted(corpus.speaker_gender))
        checks.append(
            e.ExpectColumnValuesToBeInSet(
                column="actor",
                value_set=numbers,
                meta={"reason": f"speaker number {{value}} is not one of {corpus.name}'s ({speakers})"},
            )
        )
    # the audio checks, word for word RAVDESS's (the per-file reasons come from clip_checks)
    checks += [
        check
        for check in build_suite(params).expectations
        if getattr(check, "column", "") in AUDIO_CHECK_COLUMNS
    ]
    checks += [
        e.ExpectColumnValuesToBeBetween(
            column="n_speaker_clips",
            min_value=min_speaker_clips,
            max_value=None,
            severity="warning",
            meta={"why": "a speaker with under half the median speaker's clips (see the warnings)"},
        ),
        e.ExpectColumnValuesToBeUnique(
            column="content_hash", severity="warning", meta={"why": "copied audio"}
        ),
    ]
    return gx.ExpectationSuite(name=f"{SUITE_NAME}-{corpus.name}", expectations=checks)


def add_speaker_counts(clips: pd.DataFrame) -> pd.DataFrame:
    """A copy with ``n_speaker_clips``: the clips of the row's speaker."""
    counts = clips.groupby("actor")["clip_id"].transform("size").astype("int64")
    return clips.assign(n_speaker_clips=counts)


def speaker_warnings(corpus: Corpus, clips: pd.DataFrame) -> list[str]:
    """Speakers with far fewer clips than the median speaker, and byte-identical clips."""
    warnings = []
    counts = clips[clips["actor"] >= 0].groupby("actor")["clip_id"].size()
    if len(counts) > 1:
        median = float(counts.median())
        names = {corpus.speaker_number(s): s for s in corpus.speaker_gender}
        for actor, n_clips in counts.items():
            if n_clips < FEW_CLIPS_SHARE * median:
                speaker = names.get(actor, f"{actor:02d}")
                warnings.append(
                    f"{corpus.name} speaker {speaker}: {n_clips} clips, under half the median speaker's "
                    f"{median:g}"
                )
    for _, group in clips[clips["content_hash"].duplicated(keep=False)].groupby("content_hash"):
        warnings.append(f"identical audio: {' and '.join(group['location'])}")
    return warnings


def validate_corpus_clips(
    corpus: Corpus,
    clips: pd.DataFrame,
    rejected: pd.DataFrame,
    params: Mapping[str, Any],
    docs_dir: Path | None = None,
    context: Any = None,
    name: str | None = None,
) -> ValidationReport:
    """:func:`components.data.validate.validate_clips` for another corpus, with its own suite.

    Args:
        corpus: The adapter that scanned the clips.
        clips: Its clips table (:func:`corpus_discovery`, then ``build_metadata``).
        rejected: The files its scan or reading left out (``location``, ``clip_id``, ``reason``).
        params: The ``validate`` section of ``params.yaml``.
        docs_dir: Folder for the Great Expectations Data Docs site; ``None`` for none.
        context: The data context to run the suite in (``validate.data_context``); None: a new one.
        name: The suite's name; None: ``clips-<corpus>``.
    """
    counted = add_speaker_counts(clips)
    median = float(counted.groupby("actor")["clip_id"].size().median()) if len(counted) else 0.0
    suite = build_corpus_suite(corpus, params, FEW_CLIPS_SHARE * median)
    suite.name = name or suite.name
    checks = run_suite(counted, suite, docs_dir, context)
    problems = find_problems(clips, params, suite)

    def warnings(accepted: pd.DataFrame) -> list[str]:
        return speaker_warnings(corpus, accepted)

    return sorted_report(clips, problems, rejected, checks, warnings, params, docs_dir)


def merge_reports(
    reports: Mapping[str, ValidationReport], corpora: Mapping[str, str] | None = None
) -> ValidationReport:
    """One report of several sources' (by source name): a clip id seen in an earlier source is rejected.

    Each check's name starts with its source's name, so two suites' results stay apart. The
    report counts the clips accepted and files rejected per corpus (``corpora``: each source's
    corpus; a source not in it counts under its own name).
    """
    clips, rejected, checks, warnings, seen = [], [], [], [], {}
    counts: dict[str, dict[str, int]] = {}
    for name, report in reports.items():
        table = report.clips
        again = table["clip_id"].isin(list(seen))
        duplicates = table.loc[again, ["location", "clip_id"]]
        duplicates["reason"] = [
            f"duplicate clip id {clip_id} (also in source {seen[clip_id]})"
            for clip_id in duplicates["clip_id"]
        ]
        seen.update(dict.fromkeys(table.loc[~again, "clip_id"], name))
        clips.append(table.loc[~again])
        rejected += [report.rejected, duplicates.astype(str)]
        checks += [replace(check, name=f"{name}: {check.name}") for check in report.checks]
        warnings += report.warnings
        count = counts.setdefault((corpora or {}).get(name, name), {"n_clips": 0, "n_rejected": 0})
        count["n_clips"] += int((~again).sum())
        count["n_rejected"] += len(report.rejected) + len(duplicates)
    first = next(iter(reports.values()))
    return ValidationReport(
        clips=pd.concat(clips, ignore_index=True),
        rejected=pd.concat(rejected, ignore_index=True).astype(str),
        checks=checks,
        warnings=warnings,
        max_rejected_share=first.max_rejected_share,
        docs_dir=first.docs_dir,
        corpora=dict(sorted(counts.items())),
    )
