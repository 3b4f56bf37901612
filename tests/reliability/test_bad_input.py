"""Careless and hostile input (issue 20): each case builds its input and checks the one-line answer.

Prediction and validation share one set of per-clip checks (components/data/clip_checks.py);
files are checked from their header before decoding, only regular files are read, and long
recordings are streamed. Fast cases call the components; the CLI cases run ``ser`` in-process.
"""

from __future__ import annotations

import base64
import io
import os
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from cli import app
from components.data.clip_checks import ClipLimits, recorded_limits
from components.data.discover import discover
from components.data.metadata import build_metadata, describe_file
from components.data.ravdess import parse_name
from components.data.validate import validate_clips
from components.errors import SerError
from components.serving.predict import find_audio, predict_files
from components.serving.pyfunc import decode_row
from tests.conftest import ROOT, tone
from tests.model.test_predict import registered_store, store  # noqa: F401

CLIP = "03-01-0{emotion}-01-01-01-01.wav"  # a valid RAVDESS name, emotion 1-8
CHECKS = ClipLimits()  # validate's defaults, as params.yaml sets them


def params() -> dict:
    """validate's settings as params.yaml sets them (read as text: other sections may be mid-change)."""
    import yaml

    from components.settings import Validate

    return Validate(**yaml.safe_load((ROOT / "params.yaml").read_text())["validate"]).model_dump()


def score(batch: list[tuple[np.ndarray, int]]) -> pd.DataFrame:
    """A model that answers the same for everything: what matters here is which clips reach it."""
    score.calls += len(batch)  # type: ignore[attr-defined]
    return pd.DataFrame([[0.7, 0.3]] * len(batch), columns=["prob_happy", "prob_sad"])


score.calls = 0  # type: ignore[attr-defined]


def write(path: Path, signal: np.ndarray, sampling_rate: int = 16_000, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, signal, sampling_rate, subtype=subtype)
    return path


def wav_bytes(signal: np.ndarray, sampling_rate: int = 16_000) -> str:
    buffer = io.BytesIO()
    sf.write(buffer, signal, sampling_rate, format="WAV", subtype="FLOAT")
    return base64.b64encode(buffer.getvalue()).decode()


def bad_clips() -> dict[str, tuple[np.ndarray, int, str]]:
    """Signal, rate and the problem each clip must be refused for (validate's message)."""
    square = np.where(np.sin(2 * np.pi * 220 * np.arange(32_000) / 16_000) >= 0, 1.0, -1.0)
    return {
        "one_sample": (np.full(1, 0.3, np.float32), 16_000, "duration 0.062 ms outside [0.5, ∞] s"),
        "ten_ms": (tone(0.01), 16_000, "duration 0.01 s outside [0.5, ∞] s"),
        "dc": (
            np.full(32_000, 0.5, np.float32),
            16_000,
            "constant: 100.0% of frames vary by less than -60 dBFS",
        ),
        "square": (square.astype(np.float32), 16_000, "clipped: 100.0% of samples at full scale (max 1.0%)"),
        "zeros": (np.zeros(32_000, np.float32), 16_000, "silent: every sample is zero"),
    }


def test_a_one_hertz_header_is_refused_before_decoding_and_the_next_file_is_scored(tmp_path):
    """Read as 144,000 s and cut into 72,000 windows before; now refused from the header."""
    slow = write(tmp_path / "a_one_hz.wav", tone(3.0, 48_000), 1)
    good = write(tmp_path / "b_good.wav", tone(2.0))
    score.calls = 0
    started = time.perf_counter()
    bad, fine = predict_files([slow, good], score, clip_dur=4.0, progress=False, checks=CHECKS)
    assert time.perf_counter() - started < 10
    assert bad.error == f"{slow}: sampling rate 1 Hz outside [8000, 96000]" and bad.label is None
    assert fine.label == "happy" and fine.error is None and score.calls == 1


def test_rest_rows_with_absurd_rates_are_refused_before_decoding():
    with pytest.raises(SerError, match=r"^waveform: sampling rate 1000000000000 Hz outside \[8000, 96000\]"):
        decode_row({"waveform": tone(1.0).tolist(), "sampling_rate": 10**12}, checks=CHECKS)
    with pytest.raises(SerError, match=r"^audio_base64: sampling rate 1 Hz outside \[8000, 96000\]$"):
        decode_row({"audio_base64": wav_bytes(tone(1.0), 1)}, checks=CHECKS)
    with pytest.raises(SerError, match="is not a whole number of Hz"):
        decode_row({"waveform": [0.1, 0.2], "sampling_rate": "fast"}, checks=CHECKS)


@pytest.mark.parametrize("kind", ["device", "fifo", "dangling"])
def test_devices_fifos_and_dangling_links_get_one_line_and_good_files_go_on(tmp_path, kind):
    folder = tmp_path / "in"
    good = write(folder / "a_good.wav", tone(2.0))
    odd = folder / "b_odd.wav"
    if kind == "device":
        odd.symlink_to("/dev/zero")
        problem = "not a regular file (a character device); give an audio file"
    elif kind == "fifo":
        os.mkfifo(odd)
        problem = "not a regular file (a named pipe (FIFO)); give an audio file"
    else:
        odd.symlink_to(tmp_path / "gone.wav")
        problem = f"dangling symlink (its target {tmp_path / 'gone.wav'} does not exist)"
    paths, missing = find_audio([str(folder)])
    assert paths == [good, odd] and missing == []  # the odd one is named, not skipped without a word
    fine, bad = predict_files(paths, score, clip_dur=4.0, progress=False, checks=CHECKS)
    assert bad.error == f"{odd}: {problem}" and fine.label == "happy"

    # validate: the same line, and the good clip is kept (a read of /dev/zero would never end)
    (folder / "a_good.wav").rename(folder / CLIP.format(emotion=1))
    odd.rename(folder / CLIP.format(emotion=2))
    clips, rejected = build_metadata(discover(folder), CHECKS.silence_dbfs, limits=CHECKS)
    assert list(clips["clip_id"]) == ["03-01-01-01-01-01-01"]
    assert list(rejected["reason"]) == [problem]


def test_prediction_refuses_what_validate_rejects_each_with_validates_message(tmp_path):
    """1-sample and 10 ms clips, a DC-only file, a full-scale square wave, digital silence."""
    paths = [
        write(tmp_path / f"{name}.wav", signal, rate, "FLOAT")
        for name, (signal, rate, _) in bad_clips().items()
    ]
    good = write(tmp_path / "good.wav", tone(2.0))
    score.calls = 0
    *refused, fine = predict_files([*paths, good], score, clip_dur=4.0, progress=False, checks=CHECKS)
    for result, (_, _, problem) in zip(refused, bad_clips().values(), strict=True):
        assert result.error is not None and result.error.startswith(f"{result.path}: {problem}")
        assert "\n" not in result.error and result.label is None
    assert fine.label == "happy" and score.calls == 1  # nothing else reached the model

    for name, (signal, rate, problem) in bad_clips().items():  # the REST server: both input kinds
        for row in (
            {"waveform": signal.tolist(), "sampling_rate": rate},
            {"audio_base64": wav_bytes(signal, rate)},
        ):
            with pytest.raises(SerError) as caught:
                decode_row(row, max_dur=30.0, checks=CHECKS)
            assert f": {problem}" in str(caught.value), name


def test_validate_rejects_the_same_clips_with_the_same_messages(tmp_path):
    """One statement of the checks: validate's reasons are prediction's, a DC-only file included."""
    folder = tmp_path / "data"
    for emotion, (signal, rate, _) in enumerate(bad_clips().values(), start=1):
        write(folder / CLIP.format(emotion=emotion), signal, rate, "FLOAT")
    write(folder / CLIP.format(emotion=8), tone(2.0))
    clips, rejected = build_metadata(discover(folder), CHECKS.silence_dbfs, limits=CHECKS)
    report = validate_clips(clips, rejected, params())
    reasons = dict(zip(report.rejected["clip_id"], report.rejected["reason"], strict=True))
    for emotion, (_, _, problem) in enumerate(bad_clips().values(), start=1):
        # validate bounds the duration above too (30 s): the message says so
        assert reasons[f"03-01-0{emotion}-01-01-01-01"].startswith(problem.replace("∞", "30")), reasons
    assert list(report.clips["clip_id"]) == ["03-01-08-01-01-01-01"]


def test_validate_rejects_an_hour_long_file_from_its_header_without_reading_it(tmp_path):
    """A 60-min file cost 2.8 GB before; the header says 3600 s and nothing is decoded."""
    path = tmp_path / CLIP.format(emotion=1)
    with sf.SoundFile(path, "w", 48_000, 1, "PCM_16") as out:
        block = (0.1 * tone(10.0, 48_000)).astype(np.float32)
        for _ in range(360):
            out.write(block)
    (found,) = discover(tmp_path).files
    tracemalloc.start()
    try:
        with pytest.raises(SerError, match=r": duration 3600\.00 s outside \[0\.5, 30\] s$"):
            describe_file(found, CHECKS.silence_dbfs, limits=CHECKS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000


def test_a_long_file_is_described_block_by_block(tmp_path):
    """Without limits (featurize's call) a long file is still hashed and measured in flat memory."""
    path = tmp_path / CLIP.format(emotion=1)
    with sf.SoundFile(path, "w", 48_000, 2, "PCM_16") as out:
        for seed in range(30):  # 5 minutes of stereo: 115 MB as float32
            out.write(np.stack([tone(10.0, 48_000, seed=seed)] * 2, axis=1))
    (found,) = discover(tmp_path).files
    tracemalloc.start()
    try:
        row = describe_file(found, CHECKS.silence_dbfs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert row["audio_dur"] == 300.0 and row["n_channels"] == 2 and row["size_bytes"] == path.stat().st_size
    assert row["silent_share"] == 0.0 and row["clipped_share"] == 0.0
    assert peak < 30_000_000, peak


def test_predict_streams_a_long_recording_in_flat_memory(tmp_path):
    """10 minutes at 48 kHz is 115 MB of float32 whole; scored window by window it needs a few MB."""
    path = tmp_path / "long.wav"
    with sf.SoundFile(path, "w", 48_000, 1, "PCM_16") as out:
        for seed in range(60):
            out.write(tone(10.0, 48_000, seed=seed))
    score.calls = 0
    tracemalloc.start()
    try:
        (result,) = predict_files([path], score, clip_dur=4.0, batch_size=8, progress=False, checks=CHECKS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.label == "happy" and result.duration == 600.0
    assert score.calls == len(result.windows) == 299  # every 2 s, the last aligned to the end
    assert peak < 30_000_000, peak


def test_a_truncated_file_is_scored_on_what_it_holds_not_what_its_header_claims(tmp_path):
    path = write(tmp_path / "cut.wav", tone(3.0))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header still says 3 s
    (result,) = predict_files([path], score, clip_dur=4.0, progress=False, checks=CHECKS)
    assert result.error is None and result.duration == pytest.approx(1.5, abs=0.01)


def test_names_with_a_newline_or_foreign_digits_do_not_parse():
    for name in ["03-01-01-01-01-01-01\n.wav", "03-01-01-01-01-01-٠١.wav"]:
        with pytest.raises(SerError, match="expected two digits") as caught:
            parse_name(name)
        assert "\n" not in str(caught.value)
    assert parse_name("03-01-01-01-01-01-01.wav").actor == 1


def test_validate_names_audio_it_does_not_use(tmp_path):
    """`ser predict` reads .mp3/.ogg; validate says why they are not clips rather than ignoring them."""
    write(tmp_path / CLIP.format(emotion=1), tone(2.0))
    (tmp_path / "03-01-02-01-01-01-01.mp3").write_bytes(b"ID3")
    (tmp_path / "03-01-03-01-01-01-01.ogg").write_bytes(b"OggS")
    (tmp_path / "notes.txt").write_text("not audio")
    found = discover(tmp_path)
    assert [Path(loc).name for loc, _ in found.rejected] == [
        "03-01-02-01-01-01-01.mp3",
        "03-01-03-01-01-01-01.ogg",
    ]
    assert all("not a RAVDESS clip" in reason for _, reason in found.rejected)


def test_models_without_a_record_fall_back_to_validates_defaults():
    assert recorded_limits({}) == ClipLimits()
    assert (
        recorded_limits({"silence": {"silence_dbfs": -50.0, "max_silent_share": 0.9}}).silence_dbfs == -50.0
    )
    recorded = ClipLimits(min_sampling_rate=16_000).as_dict()
    assert recorded_limits({"clip_checks": recorded}).min_sampling_rate == 16_000
    assert ClipLimits.from_mapping(params()) == ClipLimits()  # the defaults are params.yaml's


def test_cli_validate_names_each_bad_file_on_one_line(tmp_path):
    folder = tmp_path / "data"
    write(folder / CLIP.format(emotion=1), tone(2.0))
    write(folder / CLIP.format(emotion=2), tone(3.0, 48_000), 1)
    (folder / CLIP.format(emotion=3)).symlink_to("/dev/zero")
    write(folder / CLIP.format(emotion=4), np.full(32_000, 0.5, np.float32), subtype="FLOAT")
    newline = folder / "03-01-05-01-01-01-01\n.wav"
    write(newline, tone(2.0))
    result = CliRunner().invoke(app, ["validate", str(folder), "--params", str(ROOT / "params.yaml")])
    assert result.exit_code == 1 and isinstance(result.exception, SerError)  # 4 of 5 rejected: failed
    assert "Traceback" not in result.output
    lines = result.stdout.splitlines()
    one_hz = "sampling rate 1 Hz outside [8000, 96000]; duration 144000.00 s outside [0.5, 30] s"
    assert f"rejected {folder / CLIP.format(emotion=2)}: {one_hz}" in lines
    device = "not a regular file (a character device); give an audio file"
    assert f"rejected {folder / CLIP.format(emotion=3)}: {device}" in lines
    assert any(line.startswith(f"rejected {folder / CLIP.format(emotion=4)}: constant: ") for line in lines)
    # a name with a newline is shown escaped: its line does not break in two
    assert any(line.startswith(f"rejected {str(newline)!a}: ") for line in lines)


@pytest.mark.slow  # trains and registers a small model on the demo corpus (session fixture)
def test_cli_predict_names_each_bad_file_on_one_line_and_scores_the_rest(store, tmp_path):  # noqa: F811
    folder = tmp_path / "in"
    good = write(folder / "a_good.wav", tone(2.0))
    bad = {
        "b_one_hz.wav": "sampling rate 1 Hz outside [8000, 96000]",
        "c_dc.wav": "constant: 100.0% of frames vary by less than -60 dBFS around a DC offset of 0.5",
        "d_ten_ms.wav": "duration 0.01 s outside [0.5, ∞] s",
        "e_device.wav": "not a regular file (a character device); give an audio file",
        "f_dangling.wav": f"dangling symlink (its target {tmp_path / 'gone.wav'} does not exist)",
    }
    write(folder / "b_one_hz.wav", tone(3.0, 48_000), 1)
    write(folder / "c_dc.wav", np.full(32_000, 0.5, np.float32), subtype="FLOAT")
    write(folder / "d_ten_ms.wav", tone(0.01))
    (folder / "e_device.wav").symlink_to("/dev/zero")
    (folder / "f_dangling.wav").symlink_to(tmp_path / "gone.wav")
    result = CliRunner().invoke(app, ["predict", str(folder), "--json", str(tmp_path / "out.json")])
    assert result.exit_code == 0, result.output  # documented: 1 only when nothing could be predicted
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(bad)
    for line, (name, problem) in zip(errors, bad.items(), strict=True):
        assert line.startswith(f"error: {folder / name}: {problem}"), line
    assert "1 of 6 inputs predicted" in result.stderr
    import json

    files = {Path(f["file"]).name: f for f in json.loads((tmp_path / "out.json").read_text())["files"]}
    assert files[good.name]["label"] is not None and files[good.name]["error"] is None
    assert all(files[name]["label"] is None for name in bad)

    only_bad = CliRunner().invoke(app, ["predict", str(folder / "c_dc.wav"), str(folder / "e_device.wav")])
    assert only_bad.exit_code == 1 and isinstance(only_bad.exception, SerError)
    assert "none of the 2 inputs" in str(only_bad.exception)
