"""The metadata table: labels, hashes and audio statistics per file, and rejected files."""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.data.discover import AudioFile, Discovery, discover
from components.data.metadata import (
    CLIP_COLUMNS,
    CLIP_DTYPES,
    REJECTED_COLUMNS,
    build_metadata,
    describe_file,
    describe_signal,
)
from components.data.ravdess import parse_name

SILENCE_DBFS = -60.0


def sine(dur: float, sampling_rate: int = 16_000, amplitude: float = 0.5) -> np.ndarray:
    """A pure 220 Hz sine, so that peak and RMS are known exactly."""
    t = np.arange(int(dur * sampling_rate)) / sampling_rate
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_describe_signal_measures_levels() -> None:
    rate = 1000  # 25-sample frames
    signal = np.zeros((1000, 1), dtype=np.float32)
    sign = np.where(np.arange(1000) % 2, 1.0, -1.0)  # a constant level is no sound: it alternates
    signal[:500, 0] = 0.5 * sign[:500]  # half the frames loud, half digital silence
    signal[:30, 0] = sign[:30]  # 3% of samples at full scale
    stats = describe_signal(signal, rate, SILENCE_DBFS)
    assert stats["audio_dur"] == 1.0 and stats["n_channels"] == 1 and stats["sampling_rate"] == rate
    assert stats["peak"] == 1.0
    assert stats["clipped_share"] == pytest.approx(0.03)
    assert stats["silent_share"] == pytest.approx(0.5)
    assert stats["rms"] == pytest.approx(np.sqrt((30 * 1.0 + 470 * 0.25) / 1000), rel=1e-5)


def test_describe_signal_stereo_and_shorter_than_a_frame() -> None:
    stereo = np.stack([sine(1.0), np.zeros(16_000, np.float32)], axis=1)  # one silent channel
    stats = describe_signal(stereo, 16_000, SILENCE_DBFS)
    assert stats["n_channels"] == 2
    assert stats["silent_share"] == 0.0  # a frame is silent only if all channels together are
    assert stats["rms"] == pytest.approx(0.5 / np.sqrt(2) / np.sqrt(2), rel=1e-3)
    short = describe_signal(np.full((10, 1), 1e-5, np.float32), 16_000, SILENCE_DBFS)
    assert short["silent_share"] == 1.0 and short["audio_dur"] == pytest.approx(10 / 16_000)


def test_a_constant_signal_is_silent_around_its_offset() -> None:
    dc = describe_signal(np.full((16_000, 1), 0.5, np.float32), 16_000, SILENCE_DBFS)
    assert dc["silent_share"] == 1.0 and dc["rms"] == pytest.approx(0.5)
    speech_on_offset = describe_signal((0.5 + sine(1.0, amplitude=0.01))[:, None], 16_000, SILENCE_DBFS)
    assert speech_on_offset["silent_share"] == 0.0  # -40 dBFS of sound around the offset is sound


def test_level_meter_in_blocks_matches_the_whole_signal() -> None:
    from components.data.metadata import LevelMeter

    rng = np.random.default_rng(0)
    signal = (0.1 * rng.standard_normal((16_037, 2))).astype(np.float32)
    signal[4000:9000] = 0.0
    meter = LevelMeter(16_000, 2, SILENCE_DBFS)
    for start in range(0, len(signal), 777):  # blocks that cut frames in two
        meter.add(signal[start : start + 777])
    whole = describe_signal(signal, 16_000, SILENCE_DBFS)
    assert meter.result() == pytest.approx(whole)


def test_build_metadata_tabulates_each_clip(tmp_path: Path, write_wav: Callable[..., Path]) -> None:
    speech = write_wav(tmp_path / "Actor_01" / "03-01-05-02-01-01-01.wav", sine(1.0))
    stereo = np.stack([sine(0.6, 48_000), sine(0.6, 48_000)], axis=1)
    song = write_wav(tmp_path / "Actor_02" / "03-02-03-01-02-02-02.wav", stereo, 48_000)
    clips, rejected = build_metadata(discover(tmp_path), SILENCE_DBFS)

    assert list(clips.columns) == list(CLIP_COLUMNS)
    for column, dtype in CLIP_DTYPES.items():
        is_expected = pd.api.types.is_string_dtype if dtype == "str" else lambda s, d=dtype: s.dtype == d
        assert is_expected(clips[column]), column
    assert rejected.empty and list(rejected.columns) == list(REJECTED_COLUMNS)
    first, second = clips.iloc[0], clips.iloc[1]
    assert first.location == str(speech) and second.location == str(song)
    assert first.size_bytes == speech.stat().st_size
    assert first.content_hash == hashlib.sha256(speech.read_bytes()).hexdigest()
    assert first.clip_id == "03-01-05-02-01-01-01"
    assert (first.emotion, first.intensity, first.actor, first.emotion_name) == (5, 2, 1, "angry")
    assert (first.gender, first.channel_name) == ("male", "speech")
    assert (second.gender, second.channel_name, second.sampling_rate, second.n_channels) == (
        "female",
        "song",
        48_000,
        2,
    )
    assert first.audio_dur == pytest.approx(1.0) and second.audio_dur == pytest.approx(0.6)
    assert first.peak == pytest.approx(0.5, abs=1e-3)
    assert first.rms == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)
    assert first.clipped_share == 0.0 and first.silent_share == 0.0


def test_unreadable_files_are_rejected_with_their_problem(
    tmp_path: Path, write_wav: Callable[..., Path]
) -> None:
    actor = tmp_path / "Actor_03"
    write_wav(actor / "03-01-02-01-01-01-03.wav", sine(1.0))
    (actor / "03-01-02-01-01-02-03.wav").write_bytes(b"")  # zero length
    (actor / "03-01-02-01-02-01-03.wav").write_bytes(b"this is a text file, not audio\n" * 20)
    good = (actor / "03-01-02-01-01-01-03.wav").read_bytes()
    (actor / "03-01-02-01-02-02-03.wav").write_bytes(good[:30])  # header cut short
    nan = sine(1.0)
    nan[100] = np.nan
    write_wav(actor / "03-01-03-01-01-01-03.wav", nan, subtype="FLOAT")
    write_wav(actor / "03-01-03-01-01-02-03.wav", np.zeros(0, np.float32))  # a header and no samples
    (actor / "notes.wav").write_bytes(good)  # a name that does not parse
    write_wav(tmp_path / "Actor_04" / "03-01-04-01-01-01-05.wav", sine(1.0))  # folder disagrees with name

    clips, rejected = build_metadata(discover(tmp_path), SILENCE_DBFS)

    assert clips.clip_id.tolist() == ["03-01-02-01-01-01-03"]
    reasons = dict(zip(rejected.location.map(lambda loc: Path(loc).name), rejected.reason, strict=True))
    assert "zero length" in reasons["03-01-02-01-01-02-03.wav"]
    assert "not a readable WAV/FLAC" in reasons["03-01-02-01-02-01-03.wav"]
    assert "not a readable WAV/FLAC" in reasons["03-01-02-01-02-02-03.wav"]
    assert "NaN" in reasons["03-01-03-01-01-01-03.wav"]
    assert "no samples" in reasons["03-01-03-01-01-02-03.wav"]
    assert "notes.wav" in reasons and "folder Actor_04" in reasons["03-01-04-01-01-01-05.wav"]
    assert not any(reason.startswith(str(tmp_path)) for reason in rejected.reason)  # no location prefix
    clip_ids = dict(zip(rejected.location.map(lambda loc: Path(loc).name), rejected.clip_id, strict=True))
    assert clip_ids["notes.wav"] == "" and clip_ids["03-01-02-01-01-02-03.wav"] == "03-01-02-01-01-02-03"


def test_zip_members_are_read_from_the_archive(tmp_path: Path, write_wav: Callable[..., Path]) -> None:
    wav = write_wav(tmp_path / "x.wav", sine(1.0))
    archive = tmp_path / "speech.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(wav, "Actor_06/03-01-06-01-02-01-06.wav")
    location = f"{archive}::Actor_06/03-01-06-01-02-01-06.wav"
    row = describe_file(AudioFile(location, parse_name(location)), SILENCE_DBFS)
    assert row["location"] == location and row["content_hash"] == hashlib.sha256(wav.read_bytes()).hexdigest()


def test_worker_processes_give_the_same_table(tmp_path: Path, write_wav: Callable[..., Path]) -> None:
    for emotion in range(1, 5):
        write_wav(tmp_path / "Actor_07" / f"03-01-0{emotion}-01-01-01-07.wav", sine(0.5 + emotion / 10))
    (tmp_path / "Actor_07" / "03-01-05-01-01-01-07.wav").write_bytes(b"")
    found = discover(tmp_path)
    serial = build_metadata(found, SILENCE_DBFS, n_jobs=1)
    parallel = build_metadata(found, SILENCE_DBFS, n_jobs=2)
    pd.testing.assert_frame_equal(serial[0], parallel[0])
    pd.testing.assert_frame_equal(serial[1], parallel[1])


def test_empty_discovery_keeps_the_schema() -> None:
    clips, rejected = build_metadata(Discovery(), SILENCE_DBFS)
    assert clips.empty and list(clips.columns) == list(CLIP_COLUMNS)
    assert clips["sampling_rate"].dtype == np.int64 and clips["peak"].dtype == np.float64
    assert rejected.empty and list(rejected.columns) == list(REJECTED_COLUMNS)
