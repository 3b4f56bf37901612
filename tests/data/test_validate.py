"""Data validation: each planted fault is caught with its own reason; counts are warnings only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from components.data.discover import Discovery, discover
from components.data.metadata import build_metadata
from components.data.ravdess import ClipLabels
from components.data.validate import (
    ValidationReport,
    build_suite,
    count_warnings,
    find_problems,
    validate_clips,
)
from components.errors import SerError
from tests.conftest import ROOT

PARAMS_FILE = ROOT / "params.yaml"


@pytest.fixture(scope="module")
def params() -> dict[str, Any]:
    return yaml.safe_load(PARAMS_FILE.read_text())["validate"]


def sine(dur: float, sampling_rate: int = 16_000, amplitude: float = 0.3) -> np.ndarray:
    """A pure 220 Hz sine (no noise floor, so a quiet one is truly silent)."""
    t = np.arange(int(dur * sampling_rate)) / sampling_rate
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def plant(clips: pd.DataFrame, labels: ClipLabels, location: str | None = None) -> pd.DataFrame:
    """Append a copy of the first row carrying other labels (faults no parsed name can have)."""
    row = clips.iloc[[0]].assign(**labels.as_dict(), location=location or f"planted/{labels.clip_id}.wav")
    return pd.concat([clips, row], ignore_index=True)


def test_suite_marks_counts_as_warnings_and_gives_every_rejection_a_reason(params: dict[str, Any]) -> None:
    suite = build_suite(params)
    severities = {
        (e.expectation_type, getattr(e, "column", None) or e.column_A): e.severity for e in suite.expectations
    }
    assert len(suite.expectations) == 17  # none silently dropped by the suite's constructor
    assert severities[("expect_column_pair_values_to_be_equal", "n_actor_clips")] == "warning"
    assert severities[("expect_column_values_to_be_unique", "content_hash")] == "warning"
    critical = [e for e in suite.expectations if e.severity == "critical"]
    assert len(critical) == 15 and all("reason" in e.meta for e in critical)


def test_planted_faults_are_rejected_each_with_its_reason(
    tmp_path: Path, params: dict[str, Any], write_wav: Callable[..., Path]
) -> None:
    corpus = tmp_path / "corpus"
    speech = corpus / "Actor_02"
    for statement in (1, 2):
        write_wav(speech / f"03-01-02-01-0{statement}-01-02.wav", sine(1.0))
    write_wav(speech / "03-01-03-01-01-01-02.wav", sine(1.0, 4000), 4000)  # sampling rate too low
    write_wav(speech / "03-01-04-01-01-01-02.wav", sine(0.2))  # too short
    write_wav(speech / "03-01-05-01-01-01-02.wav", np.zeros(16_000, np.float32))  # digital silence
    write_wav(speech / "03-01-06-01-01-01-02.wav", sine(1.0, amplitude=1e-4))  # -83 dBFS: silent
    write_wav(speech / "03-01-07-01-01-01-02.wav", np.clip(sine(1.0, amplitude=2.0), -1, 1))  # clipped
    (speech / "03-01-08-01-01-01-02.wav").write_bytes(b"")  # zero length
    (speech / "03-01-08-02-01-01-02.wav").write_bytes(b"not audio at all")
    write_wav(speech / "hello.wav", sine(1.0))  # not a RAVDESS name
    clips, rejected = build_metadata(discover(corpus), params["silence_dbfs"])
    clips = plant(clips, ClipLabels(3, 2, 7, 1, 1, 1, 2))  # song with disgust
    clips = plant(clips, ClipLabels(3, 1, 1, 2, 1, 1, 2))  # neutral at strong intensity
    clips = plant(clips, ClipLabels(3, 1, 2, 1, 1, 1, 25))  # actor out of range
    clips = plant(clips, ClipLabels(1, 1, 2, 1, 1, 1, 2))  # audio-video modality
    clips = plant(clips, ClipLabels(3, 1, 2, 1, 1, 1, 2), location="copy/03-01-02-01-01-01-02.wav")  # dup id
    docs_dir = tmp_path / "docs"

    report = validate_clips(clips, rejected, params, docs_dir)

    reasons = dict(
        zip(report.rejected.location.map(lambda loc: Path(loc).name), report.rejected.reason, strict=True)
    )
    expected = {
        "03-01-03-01-01-01-02.wav": "sampling rate 4000 Hz outside [8000, 96000]",
        "03-01-04-01-01-01-02.wav": "duration 0.20 s outside [0.5, 30] s",
        "03-01-05-01-01-01-02.wav": "silent: every sample is zero",
        "03-01-06-01-01-01-02.wav": "silent: 100.0% of frames below -60 dBFS (max 98%)",
        "03-01-07-01-01-01-02.wav": "clipped: ",
        "03-01-08-01-01-01-02.wav": "zero length",
        "03-01-08-02-01-01-02.wav": "not a readable WAV/FLAC file",
        "hello.wav": "expected 7 two-digit fields",
        "03-02-07-01-01-01-02.wav": "song clip with emotion 07 (disgust)",
        "03-01-01-02-01-01-02.wav": "neutral clip at strong intensity (02)",
        "03-01-02-01-01-01-25.wav": "actor code 25 not in 01–24",
        "01-01-02-01-01-01-02.wav": "modality code 01 not in 03",
        "03-01-02-01-01-01-02.wav": "duplicate clip id 03-01-02-01-01-01-02",  # the planted copy
    }
    for name, reason in expected.items():
        assert reason in reasons.get(name, ""), (name, reasons.get(name))
    assert "of samples at full scale (max 1.0%)" in reasons["03-01-07-01-01-01-02.wav"]
    assert report.clips.location.map(lambda loc: Path(loc).name).tolist() == [
        "03-01-02-01-01-01-02.wav",  # the first copy of a duplicated id is kept
        "03-01-02-01-02-01-02.wav",
    ]
    assert len(report.rejected) == len(expected)
    assert report.rejected_share == pytest.approx(len(expected) / (len(expected) + 2))
    failed = {check.name: check.n_unexpected for check in report.checks if not check.success}
    assert failed["expect_column_values_to_be_between(sampling_rate)"] == 1
    assert failed["expect_column_pair_values_to_be_in_set(vocal_channel, emotion)"] == 1
    assert failed["expect_column_values_to_be_in_set(actor)"] == 1
    assert failed["expect_column_values_to_be_unique(clip_id)"] == 2  # GE counts every copy
    assert not report.passed
    with pytest.raises(SerError, match="data validation failed") as raised:
        report.raise_if_failed()
    assert "03-01-03-01-01-01-02.wav: sampling rate 4000 Hz" in str(raised.value)
    pages = {path.relative_to(docs_dir).parts[0] for path in docs_dir.rglob("*.html")}
    assert (docs_dir / "index.html").is_file() and {"expectations", "validations"} <= pages


def test_a_partial_clean_subset_passes_with_count_warnings(
    tmp_path: Path, params: dict[str, Any], write_wav: Callable[..., Path]
) -> None:
    for level, name in enumerate(("03-01-02-01-01-01-01", "03-01-02-02-02-02-01", "03-02-05-01-01-01-04")):
        write_wav(tmp_path / f"{name}.wav", sine(1.0, amplitude=0.2 + level / 10))  # not identical
    clips, rejected = build_metadata(discover(tmp_path), params["silence_dbfs"])

    report = validate_clips(clips, rejected, params, docs_dir=None)

    assert report.passed and report.rejected.empty and len(report.clips) == 3
    report.raise_if_failed()
    assert [w.split(" (")[0] for w in report.warnings] == [
        "actor 01 speech: 2 of 60 clips",
        "actor 04 song: 1 of 44 clips",
    ]
    assert all(c.success for c in report.checks if c.severity == "critical")
    counts = next(c for c in report.checks if c.name.startswith("expect_column_pair_values_to_be_equal"))
    assert (counts.success, counts.severity, counts.n_unexpected) == (False, "warning", 3)
    assert "3 clips accepted (2 speech, 1 song), 0 files rejected" in report.summary()


def test_count_warnings_name_missing_clips_song_of_actor_18_and_copies() -> None:
    rows = [ClipLabels(3, 2, 1, 1, 1, 1, 18).as_dict(), ClipLabels(3, 1, 1, 1, 1, 1, 3).as_dict()]
    clips = pd.DataFrame(rows).assign(location=["a.wav", "b.wav"], content_hash=["same", "same"])
    warnings = count_warnings(clips)
    assert warnings[0].startswith("actor 03 speech: 1 of 60 clips (missing 03-01-01-01-01-02-03,")
    assert warnings[0].endswith(", …)")
    assert warnings[1] == "actor 18 song: 1 clips, but RAVDESS has none"
    assert warnings[2] == "identical audio: a.wav and b.wav"


def test_missing_statistics_are_rejected_not_ignored(params: dict[str, Any]) -> None:
    row = ClipLabels(3, 1, 2, 1, 1, 1, 1).as_dict()
    stats = {
        "sampling_rate": 16_000,
        "audio_dur": np.nan,
        "peak": 0.5,
        "silent_share": 0.1,
        "clipped_share": 0.0,
    }
    table = pd.DataFrame([{**row, **stats, "location": "x.wav"}, {**row, **stats, "actor": np.nan}])
    problems = find_problems(table, params)
    assert problems[0] == "duration nan s outside [0.5, 30] s"
    assert problems[1].startswith("expect_column_values_to_be_in_set not met (value nan)")


@pytest.mark.parametrize(("n_rejected", "passed"), [(0, True), (1, True), (2, False)])
def test_rejected_share_threshold(n_rejected: int, passed: bool) -> None:
    clips = pd.DataFrame({"channel_name": ["speech"] * (20 - n_rejected)})
    rejected = pd.DataFrame({"location": [f"r{i}.wav" for i in range(n_rejected)], "reason": "bad"})
    report = ValidationReport(clips, rejected, checks=[], warnings=[], max_rejected_share=0.05)
    assert report.passed is passed  # 1 of 20 is exactly the 5% allowed
    if passed:
        report.raise_if_failed()
    else:
        with pytest.raises(SerError, match=r"r1\.wav: bad"):
            report.raise_if_failed()


def test_nothing_readable_fails(params: dict[str, Any]) -> None:
    discovery = Discovery(rejected=[("corpus/hello.wav", "expected 7 two-digit fields")])
    clips, rejected = build_metadata(discovery, params["silence_dbfs"])
    report = validate_clips(clips, rejected, params)  # Great Expectations on an empty table
    assert not report.passed and report.metrics()["n_rejected"] == 1
    assert "0 clips accepted (none), 1 files rejected (100.0%" in report.summary()


@pytest.mark.ravdess
def test_real_sample_passes_complete(ravdess_dir: Path, params: dict[str, Any]) -> None:
    # the sample's speech is the full-length official set (60 clips per actor), song 44 per actor
    clips, rejected = build_metadata(discover(ravdess_dir), params["silence_dbfs"])
    report = validate_clips(clips, rejected, params)
    assert (len(report.clips), len(report.rejected), report.passed) == (1248, 0, True)
    assert [w for w in report.warnings if w.startswith("actor")] == []
    assert all(c.success for c in report.checks if c.severity == "critical")
