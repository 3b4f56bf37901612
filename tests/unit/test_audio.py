"""Loading audio of every format into mono 16 kHz fixed-length clips."""

import numpy as np
import pytest
import soundfile as sf

from components.data.audio import SAMPLING_RATE, fit_length, load_clip, read_audio, trim_silence
from components.errors import SerError
from tests.conftest import tone


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_reads_every_sample_format(tmp_path, write_wav, subtype):
    path = write_wav(tmp_path / f"x-{subtype}.wav", tone(0.5), 16_000, subtype)
    clip = load_clip(path, clip_dur=None)
    assert clip.dtype == np.float32
    assert len(clip) == 8000
    tolerance = 0.02 if subtype == "PCM_U8" else 1e-3
    assert np.max(np.abs(clip - tone(0.5))) < tolerance


@pytest.mark.parametrize("rate", [8_000, 22_050, 44_100, 48_000, 96_000])
def test_resamples_to_16k_and_keeps_pitch(tmp_path, write_wav, rate):
    path = write_wav(tmp_path / "x.wav", tone(1.0, rate, freq=440.0), rate)
    clip = load_clip(path, clip_dur=None)
    assert abs(len(clip) - SAMPLING_RATE) <= 1
    spectrum = np.abs(np.fft.rfft(clip))
    assert abs(np.argmax(spectrum) * SAMPLING_RATE / len(clip) - 440.0) < 2.0


def test_flac_and_six_channels_become_mono(tmp_path):
    six = np.stack([tone(0.5) * (k + 1) / 6 for k in range(6)], axis=1)
    path = tmp_path / "x.flac"
    sf.write(path, six, 16_000)
    clip = load_clip(path, clip_dur=None)
    assert clip.ndim == 1
    assert np.allclose(clip, six.mean(axis=1), atol=1e-3)


def test_pads_and_trims_to_clip_dur(tmp_path, write_wav):
    short = write_wav(tmp_path / "short.wav", tone(1.0))
    long = write_wav(tmp_path / "long.wav", tone(6.0))
    assert len(load_clip(short, clip_dur=4.0)) == 64_000
    assert len(load_clip(long, clip_dur=4.0)) == 64_000
    assert np.all(load_clip(short, clip_dur=4.0)[16_000:] == 0)
    assert len(fit_length(np.ones(10, np.float32), 4)) == 4


def test_trims_leading_and_trailing_silence():
    voiced = tone(1.0)
    signal = np.concatenate([np.zeros(16_000, np.float32), voiced, np.zeros(8_000, np.float32)])
    trimmed = trim_silence(signal, 16_000, top_db=40, margin_dur=0.0)
    assert abs(len(trimmed) - 16_000) <= 400
    assert np.array_equal(trim_silence(np.zeros(1000, np.float32), 16_000, 40), np.zeros(1000, np.float32))


def test_reads_from_bytes(tmp_path, write_wav):
    path = write_wav(tmp_path / "x.wav")
    signal, rate = read_audio(path.read_bytes(), name="upload.wav")
    assert rate == 16_000
    assert signal.shape[1] == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "file is empty"),
        (b"RIFF\x10\x00\x00\x00WAVEfmt ", "not a readable"),
        (b"hello, this is not audio" * 10, "not a readable"),
    ],
)
def test_bad_bytes_raise_a_clear_error(tmp_path, content, message):
    path = tmp_path / "03-01-01-01-01-01-01.wav"
    path.write_bytes(content)
    with pytest.raises(SerError, match=message) as err:
        read_audio(path)
    assert str(path) in str(err.value)


def test_zero_length_and_nan_are_rejected(tmp_path, write_wav):
    empty = write_wav(tmp_path / "empty.wav", np.zeros(0, np.float32))
    with pytest.raises(SerError, match="zero length"):
        read_audio(empty)
    bad = tone(0.1)
    bad[5] = np.nan
    nan = write_wav(tmp_path / "nan.wav", bad, subtype="FLOAT")
    with pytest.raises(SerError, match="NaN"):
        read_audio(nan)


def test_missing_file(tmp_path):
    with pytest.raises(SerError, match=r"not found|not a readable"):
        read_audio(tmp_path / "absent.wav")


def test_read_audio_names_an_empty_file_as_empty(tmp_path):
    # libsndfile alone says "Format not recognised" for a 0-byte file (ser predict showed that)
    path = tmp_path / "03-01-05-01-01-01-01.wav"
    path.write_bytes(b"")
    with pytest.raises(SerError, match="file is empty"):
        read_audio(path)
    with pytest.raises(SerError, match="file is empty"):
        read_audio(b"", name="clip.wav")
