"""Another corpus's Great Expectations suite: its own labels and speakers, counts as warnings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from components.data.corpora import get_corpus
from components.data.metadata import build_metadata
from components.data.validate_corpus import (
    build_corpus_suite,
    corpus_discovery,
    merge_reports,
    validate_corpus_clips,
)
from tests.conftest import ROOT, tone

NAMES = [f"{s}a0{t}{e}a.wav" for s in ("03", "08", "16") for t in (1, 2) for e in "WLEAFTN"]


@pytest.fixture(scope="module")
def params() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "params.yaml").read_text())["validate"]


def emodb_clips(root: Path, params: dict[str, Any]):
    corpus = get_corpus("emodb")
    clips, rejected = build_metadata(
        corpus_discovery(corpus, corpus.scan(root)), params["silence_dbfs"], corpus="emodb"
    )
    return corpus, clips, rejected


def test_the_suite_states_the_corpus_labels_and_speakers(params):
    suite = build_corpus_suite(get_corpus("emodb"), params, min_speaker_clips=7)
    by_column = {e.column: e for e in suite.expectations if hasattr(e, "column")}
    assert sorted(by_column["emotion_name"].value_set) == sorted("WLEAFTN")
    assert sorted(by_column["actor"].value_set) == [3, 8, 9, 10, 11, 12, 13, 14, 15, 16]
    assert by_column["n_speaker_clips"].severity == "warning" and by_column["n_speaker_clips"].min_value == 7
    assert suite.name == "clips-emodb"
    critical = [e for e in suite.expectations if e.severity == "critical"]
    assert all("reason" in e.meta for e in critical) and len(critical) == 9


def test_planted_faults_are_rejected_with_reasons_and_a_thin_speaker_is_a_warning(
    tmp_path, write_wav, params
):
    for i, name in enumerate([*NAMES, "09a01Wa.wav"]):
        write_wav(tmp_path / name, tone(dur=1.0, freq=140 + 5 * i, seed=i))
    corpus, clips, rejected = emodb_clips(tmp_path, params)
    assert rejected.empty and clips["corpus"].eq("emodb").all() and len(clips) == len(NAMES) + 1
    planted = clips.iloc[[0, 1]].assign(
        clip_id=["emodb-planted-speaker", "emodb-planted-code"],
        location=["planted/speaker.wav", "planted/code.wav"],
        actor=[99, 3],
        emotion_name=["W", "W"],
        emotion=[1, 2],  # W is code 1, not 2
    )
    table = pd.concat([clips, planted], ignore_index=True)
    report = validate_corpus_clips(corpus, table, rejected, params, docs_dir=None)
    reasons = dict(zip(report.rejected["clip_id"], report.rejected["reason"], strict=True))
    assert reasons["emodb-planted-speaker"].startswith("speaker number 99 is not one of emodb's (03, 08,")
    assert reasons["emodb-planted-code"] == "emotion code 2 does not belong to 'W'"
    assert len(report.clips) == len(NAMES) + 1 and report.rejected_share == 2 / 45 and report.passed
    assert report.warnings == ["emodb speaker 09: 1 clips, under half the median speaker's 14"]
    failed = {c.name: c for c in report.checks if not c.success}
    assert failed["expect_column_values_to_be_between(n_speaker_clips)"].severity == "warning"


def test_real_emodb_sample_passes(emodb_dir, params):
    corpus = get_corpus("emodb")
    clips, rejected = build_metadata(corpus_discovery(corpus, corpus.scan(emodb_dir)), params["silence_dbfs"])
    report = validate_corpus_clips(corpus, clips, rejected, params)
    assert report.passed and len(report.clips) == 243 and report.rejected.empty
    assert not [c.name for c in report.checks if not c.success and c.severity == "critical"]


def test_merged_sources_keep_suites_apart_and_reject_a_clip_id_seen_before(tmp_path, write_wav, params):
    for i, name in enumerate(NAMES[:4]):
        write_wav(tmp_path / "a" / name, tone(dur=1.0, freq=140 + 5 * i, seed=i))
    write_wav(tmp_path / "b" / NAMES[0], tone(dur=1.0, freq=300))  # the same clip id, other audio
    write_wav(tmp_path / "b" / NAMES[-1], tone(dur=1.0, freq=310))
    reports = {}
    for name in ("a", "b"):
        corpus, clips, rejected = emodb_clips(tmp_path / name, params)
        reports[name] = validate_corpus_clips(corpus, clips, rejected, params)
    merged = merge_reports(reports)
    assert merged.clips["clip_id"].tolist() == [
        *reports["a"].clips["clip_id"],
        f"emodb-{NAMES[-1].removesuffix('.wav')}",
    ]
    assert merged.rejected["reason"].tolist() == [
        f"duplicate clip id emodb-{NAMES[0][:-4]} (also in source a)"
    ]
    assert {check.name.split(": ")[0] for check in merged.checks} == {"a", "b"}
    assert len(merged.checks) == len(reports["a"].checks) + len(reports["b"].checks)
    # per corpus: two sources of EmoDB add up (the duplicate counts as rejected)
    both = merge_reports(reports, {"a": "emodb", "b": "emodb"}).metrics()["corpora"]
    assert both == {"emodb": {"n_clips": 5, "n_rejected": 1}}
    assert merge_reports(reports, {"a": "emodb", "b": "custom-b"}).metrics()["corpora"] == {
        "custom-b": {"n_clips": 1, "n_rejected": 1},
        "emodb": {"n_clips": 4, "n_rejected": 0},
    }
    assert "corpora" not in reports["a"].metrics()  # one source, as before
