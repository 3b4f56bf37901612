"""Data checks on the clips table: a Great Expectations suite, and per-file rejection reasons.

The suite is the one statement of the rules. Great Expectations runs it on the whole table
(results and Data Docs); each ``critical`` expectation is also applied row by row in pandas,
its ``meta["reason"]`` filled in from the failing row, so every rejected file gets its own
reason. Per-actor clip counts are warnings, never rejections: a subset of RAVDESS (a sample
of actors, a demo corpus) is legitimately partial.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import great_expectations as gx
import pandas as pd
from great_expectations.data_context.types import base as gx_config

from components.data import ravdess
from components.data.clip_checks import ClipLimits, header_problems, signal_problems
from components.data.validation_report import CheckResult, ValidationReport

SUITE_NAME = "clips"
DOCS_SITE = "ser_docs"
MAX_LISTED = 6  # missing clip ids named per warning before "…"
# the per-clip audio checks: the suite states them for the table, clip_checks gives each file's reason
CLIP_CHECK_COLUMNS = frozenset({"sampling_rate", "audio_dur", "peak", "silent_share", "clipped_share"})


def add_count_columns(clips: pd.DataFrame) -> pd.DataFrame:
    """A copy with ``n_actor_clips`` (clips of the row's actor and channel) and ``n_actor_expected``."""
    per_channel = {channel: len(ravdess.expected_clips(channel)) for channel in ravdess.VOCAL_CHANNELS}
    expected = clips["vocal_channel"].map(per_channel).fillna(0).astype("int64")
    expected[clips["actor"].isin(ravdess.ACTORS_WITHOUT_SONG) & (clips["vocal_channel"] == 2)] = 0
    counts = clips.groupby(["actor", "vocal_channel"])["clip_id"].transform("size").astype("int64")
    return clips.assign(n_actor_clips=counts, n_actor_expected=expected)


def label_codes(modalities: Sequence[int]) -> dict[str, list[int]]:
    """The codes RAVDESS defines for each label field, modality narrowed to ``modalities``."""
    r = ravdess
    defined = (modalities, r.VOCAL_CHANNELS, r.EMOTIONS, r.INTENSITIES, r.STATEMENTS, r.REPETITIONS, r.ACTORS)
    return {field: sorted(codes) for field, codes in zip(r.FIELDS, defined, strict=True)}


def _between(column: str, low: float | None, high: float | None, reason: str, **kwargs: Any) -> Any:
    return gx.expectations.ExpectColumnValuesToBeBetween(
        column=column, min_value=low, max_value=high, meta={"reason": reason}, **kwargs
    )


def build_suite(params: Mapping[str, Any]) -> gx.ExpectationSuite:
    """The expectations on a clips table (with :func:`add_count_columns` applied).

    Args:
        params: The ``validate`` section of ``params.yaml``.

    Returns:
        A suite of ``critical`` expectations, each with a ``meta["reason"]`` template filled
        from a failing row, plus ``warning`` ones (clip counts per actor, identical audio).
    """
    e, p = gx.expectations, params
    checks = []
    for field, codes in label_codes(p["modalities"]).items():
        shown = ", ".join(f"{c:02d}" for c in codes) if len(codes) < 4 else f"{codes[0]:02d}–{codes[-1]:02d}"
        reason = f"{field} code {{value:02d}} not in {shown}"
        checks.append(e.ExpectColumnValuesToBeInSet(column=field, value_set=codes, meta={"reason": reason}))
    emotions = ravdess.EMOTIONS
    intensities = [(emo, level) for emo in emotions for level in (1, 2) if (emo, level) != (1, 2)]
    channels = [(ch, emo) for ch in (1, 2) for emo in emotions if ch == 1 or emo in ravdess.SONG_EMOTIONS]
    strong = "{emotion_name} clip at strong intensity (02); RAVDESS neutral is normal only"
    song = "{channel_name} clip with emotion {emotion:02d} ({emotion_name})"
    checks += [
        e.ExpectColumnPairValuesToBeInSet(
            column_A="emotion", column_B="intensity", value_pairs_set=intensities, meta={"reason": strong}
        ),
        e.ExpectColumnPairValuesToBeInSet(
            column_A="vocal_channel", column_B="emotion", value_pairs_set=channels, meta={"reason": song}
        ),
        e.ExpectColumnValuesToBeUnique(column="clip_id", meta={"reason": "duplicate clip id {clip_id}"}),
        _between(
            "sampling_rate",
            p["min_sampling_rate"],
            p["max_sampling_rate"],
            "sampling rate {sampling_rate} Hz outside [{min_value:g}, {max_value:g}]",
        ),
        _between(
            "audio_dur",
            p["min_audio_dur"],
            p["max_audio_dur"],
            "duration {audio_dur:.2f} s outside [{min_value:g}, {max_value:g}] s",
        ),
        _between("peak", 0, None, "silent: every sample is zero", strict_min=True),
        _between(
            "silent_share",
            None,
            p["max_silent_share"],
            "silent: {silent_share:.1%} of frames below {silence_dbfs:g} dBFS (max {max_value:.0%})",
        ),
        _between(
            "clipped_share",
            None,
            p["max_clipped_share"],
            "clipped: {clipped_share:.1%} of samples at full scale (max {max_value:.1%})",
        ),
        e.ExpectColumnPairValuesToBeEqual(
            column_A="n_actor_clips",
            column_B="n_actor_expected",
            severity="warning",
            meta={"why": "RAVDESS has 60 speech, 44 song clips per actor (18: no song); subsets are partial"},
        ),
        e.ExpectColumnValuesToBeUnique(
            column="content_hash", severity="warning", meta={"why": "copied audio"}
        ),
    ]
    # passed to the constructor: add_expectation() would need an active data context
    return gx.ExpectationSuite(name=SUITE_NAME, expectations=checks)


def data_context(docs_dir: Path | None) -> Any:
    """An in-memory context: no files but the Data Docs, no analytics, no progress bars.

    Suites run in one context share one Data Docs site (its index lists every one).
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    sites = {}
    if docs_dir is not None:
        sites[DOCS_SITE] = {
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(Path(docs_dir).resolve()),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = gx_config.DataContextConfig(
        store_backend_defaults=gx_config.InMemoryStoreBackendDefaults(),
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=gx_config.ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def run_suite(
    table: pd.DataFrame, suite: gx.ExpectationSuite, docs_dir: Path | None = None, context: Any = None
) -> list[CheckResult]:
    """Run ``suite`` on ``table`` through a Checkpoint, writing Data Docs to ``docs_dir`` if given.

    ``context``: a :func:`data_context` of ``docs_dir`` that other suites ran in too (names apart).
    """
    context, name = context or data_context(docs_dir), suite.name  # a name per suite: its own pages
    asset = context.data_sources.add_pandas(name).add_dataframe_asset(name)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(
            data=asset.add_batch_definition_whole_dataframe(name),
            suite=context.suites.add(suite),
            name=name,
        )
    )
    actions = [gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=[DOCS_SITE])] if docs_dir else []
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(name=name, validation_definitions=[definition], actions=actions)
    )
    results = []
    for run in checkpoint.run(batch_parameters={"dataframe": table}).run_results.values():
        for result in run.results:
            config = result.expectation_config
            columns = [
                config.kwargs[key] for key in ("column", "column_A", "column_B") if key in config.kwargs
            ]
            results.append(
                CheckResult(
                    name=f"{config.type}({', '.join(columns)})",
                    success=bool(result.success),
                    severity=str(getattr(config.severity, "value", config.severity)),
                    n_unexpected=int(result.result.get("unexpected_count") or 0),
                )
            )
    return results


def failing_rows(expectation: gx.expectations.Expectation, table: pd.DataFrame) -> pd.Series:
    """The rows of ``table`` that fail a per-row expectation, in pandas (missing values fail too).

    Unlike Great Expectations, which flags every copy of a duplicated value, only the second
    and later copies fail ``ExpectColumnValuesToBeUnique``: the first is kept.
    """
    e = gx.expectations
    if isinstance(expectation, e.ExpectColumnValuesToBeInSet):
        return ~table[expectation.column].isin(expectation.value_set)
    if isinstance(expectation, e.ExpectColumnValuesToBeUnique):
        return table[expectation.column].duplicated()
    if isinstance(expectation, e.ExpectColumnPairValuesToBeInSet):
        pairs = {tuple(pair) for pair in expectation.value_pairs_set}
        found = zip(table[expectation.column_A], table[expectation.column_B], strict=True)
        return pd.Series([pair not in pairs for pair in found], index=table.index, dtype=bool)
    if isinstance(expectation, e.ExpectColumnValuesToBeBetween):
        values, low, high = table[expectation.column], expectation.min_value, expectation.max_value
        good = values.notna()
        if low is not None:
            good &= values > low if expectation.strict_min else values >= low
        if high is not None:
            good &= values < high if expectation.strict_max else values <= high
        return ~good
    raise TypeError(f"no per-row rule for {type(expectation).__name__}")


def find_problems(
    clips: pd.DataFrame, params: Mapping[str, Any], suite: gx.ExpectationSuite | None = None
) -> pd.Series:
    """Why each clip is unusable: the failed critical expectations' reasons, or ``""``.

    Args:
        clips: A clips table as :func:`components.data.metadata.build_metadata` makes it.
        params: The ``validate`` section of ``params.yaml``.
        suite: The suite whose critical expectations apply; None: RAVDESS's, :func:`build_suite`.

    Returns:
        A string Series on ``clips.index``, reasons joined by ``"; "``.
    """
    reasons: dict[Any, list[str]] = {index: [] for index in clips.index}
    for expectation in (suite or build_suite(params)).expectations:
        if expectation.severity != "critical" or getattr(expectation, "column", None) in CLIP_CHECK_COLUMNS:
            continue  # the audio checks' reasons come from clip_checks, as prediction's do
        settings = {key: getattr(expectation, key, None) for key in ("min_value", "max_value")}
        for index, row in clips[failing_rows(expectation, clips)].iterrows():
            value = row.get(getattr(expectation, "column", ""))
            context = {**params, **settings, **row.to_dict(), "value": value}
            try:
                reasons[index].append(expectation.meta["reason"].format(**context))
            except (KeyError, ValueError, TypeError):  # a value the template cannot show, e.g. NaN as 02d
                reasons[index].append(f"{expectation.expectation_type} not met (value {value!r})")
    limits = ClipLimits.from_mapping(params)
    for index, row in clips.iterrows():
        rate = row["sampling_rate"]
        reasons[index] += header_problems(rate, row["audio_dur"] * rate, limits)
        reasons[index] += signal_problems(row, limits)
    return pd.Series(["; ".join(found) for found in reasons.values()], index=clips.index, dtype=str)


def count_warnings(clips: pd.DataFrame) -> list[str]:
    """Clips missing against RAVDESS's design per actor and channel, and byte-identical clips.

    Only the actor and channel pairs present in ``clips`` are checked, so a sample of actors
    or a speech-only corpus is not flagged for what it leaves out on purpose.
    """
    warnings = []
    for (actor, channel), group in clips.groupby(["actor", "vocal_channel"]):
        name = ravdess.VOCAL_CHANNELS.get(channel, f"channel {channel:02d}")
        if actor in ravdess.ACTORS_WITHOUT_SONG and channel == 2:
            warnings.append(f"actor {actor:02d} {name}: {len(group)} clips, but RAVDESS has none")
            continue
        present = set(zip(group.emotion, group.intensity, group.statement, group.repetition, strict=True))
        expected = ravdess.expected_clips(channel) if channel in ravdess.VOCAL_CHANNELS else []
        missing = [
            ravdess.ClipLabels(3, channel, c.emotion, c.intensity, c.statement, c.repetition, actor).clip_id
            for c in expected
            if (c.emotion, c.intensity, c.statement, c.repetition) not in present
        ]
        if missing:
            listed = ", ".join(missing[:MAX_LISTED]) + (", …" if len(missing) > MAX_LISTED else "")
            warnings.append(
                f"actor {actor:02d} {name}: {len(group)} of {len(expected)} clips (missing {listed})"
            )
    for _, group in clips[clips["content_hash"].duplicated(keep=False)].groupby("content_hash"):
        warnings.append(f"identical audio: {' and '.join(group['location'])}")
    return warnings


def validate_clips(
    clips: pd.DataFrame,
    rejected: pd.DataFrame,
    params: Mapping[str, Any],
    docs_dir: Path | None = None,
    context: Any = None,
    name: str = SUITE_NAME,
) -> ValidationReport:
    """Check a clips table, move unusable clips to the rejected table, and report.

    Args:
        clips: The clips table from :func:`components.data.metadata.build_metadata`.
        rejected: Its rejected table (``location``, ``clip_id``, ``reason``).
        params: The ``validate`` section of ``params.yaml``.
        docs_dir: Folder for the Great Expectations Data Docs site (HTML); ``None`` for none.
        context: The :func:`data_context` to run the suite in; None: a new one.
        name: The suite's name (several RAVDESS sources' suites run in one context apart).

    Returns:
        The report. Stopping is the caller's choice: :meth:`ValidationReport.raise_if_failed`.
    """
    suite = build_suite(params)
    suite.name = name
    checks = run_suite(add_count_columns(clips), suite, docs_dir, context)
    problems = find_problems(clips, params)
    return sorted_report(clips, problems, rejected, checks, count_warnings, params, docs_dir)


def sorted_report(
    clips: pd.DataFrame,
    problems: pd.Series,
    rejected: pd.DataFrame,
    checks: Any,
    warnings: Callable[[pd.DataFrame], list[str]],
    params: Mapping[str, Any],
    docs_dir: Path | None,
) -> ValidationReport:
    """The report of a checked clips table: clips with a problem moved to the rejected table.

    ``problems`` holds each clip's reasons ("" when usable); ``warnings`` reads the accepted clips.
    """
    bad = problems != ""
    newly_rejected = clips.loc[bad, ["location", "clip_id"]].assign(reason=problems[bad])
    accepted = clips.loc[~bad].reset_index(drop=True)
    return ValidationReport(
        clips=accepted,
        rejected=pd.concat([rejected, newly_rejected], ignore_index=True).astype(str),
        checks=checks,
        warnings=warnings(accepted),
        max_rejected_share=float(params["max_rejected_share"]),
        docs_dir=docs_dir,
    )
