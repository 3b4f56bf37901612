"""Feature extractors: shapes, names, determinism, loudness behaviour, agreement with librosa."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import yaml

from components.errors import SerError
from components.features import compare, egemaps, handmade, logmel, sets, spectral, waveform
from tests.conftest import ROOT, tone

SETTINGS = yaml.safe_load((ROOT / "params.yaml").read_text())
PARAMS = sets.extract_params(SETTINGS["preprocess"], SETTINGS["featurize"])
SPECTRAL = {key: PARAMS[key] for key in ("n_fft", "hop_length", "n_mels")}
LEVEL_FEATURES = {"mfcc_mean_0", "rms_mean", "rms_std", "loudness_dbfs", "peak_dbfs"}


def chirp(dur: float = 1.5, sampling_rate: int = 16_000, amplitude: float = 0.3) -> np.ndarray:
    """A 150 Hz → 3 kHz sweep over a -40 dBFS noise floor (never silent)."""
    t = np.arange(int(dur * sampling_rate)) / sampling_rate
    sweep = np.sin(2 * np.pi * (150 * t + (3000 - 150) / (2 * dur) * t**2))
    noise = 0.01 * np.random.default_rng(1).standard_normal(len(t))
    return (amplitude * sweep + noise).astype(np.float32)


def handmade_dict(signal: np.ndarray, sampling_rate: int = 16_000) -> dict[str, float]:
    values = sets.extract_sets(signal, sampling_rate, ["handmade"], PARAMS)["handmade"]
    return dict(zip(sets.feature_names("handmade", PARAMS), values, strict=True))


@pytest.mark.parametrize("sampling_rate", [16_000, 48_000])
def test_every_set_has_its_documented_shape_and_finite_values(sampling_rate):
    signal = chirp(sampling_rate=sampling_rate)
    out = sets.extract_sets(signal, sampling_rate, sets.FEATURE_SETS, PARAMS)
    assert list(out) == list(sets.FEATURE_SETS)
    assert out["handmade"].shape == (len(sets.feature_names("handmade", PARAMS)),)
    assert out["egemaps"].shape == (egemaps.N_FEATURES,) == (len(egemaps.feature_names()),)
    kwargs = {key: PARAMS[key] for key in logmel.PARAMS}
    assert out["logmel"].shape == logmel.output_shape(sampling_rate, **kwargs)
    assert out["logmel"].dtype == np.float16
    assert out["waveform"].shape == signal.shape and out["waveform"].dtype == np.int16
    assert out["compare"].shape == (compare.N_FEATURES,) == (len(compare.feature_names()),)
    for name in ("handmade", "egemaps", "compare"):
        assert out[name].dtype == np.float32
    for values in out.values():
        assert np.isfinite(values.astype(np.float32)).all()


def test_names_are_unique_and_follow_n_mfcc():
    names = handmade.feature_names(n_mfcc=13)
    assert len(names) == len(set(names)) == 3 * 13 + 2 * 12 + 2 * 7 + 4 + 4
    assert len(set(egemaps.feature_names())) == egemaps.N_FEATURES


def test_same_input_gives_identical_arrays():
    signal = chirp()
    first = sets.extract_sets(signal, 16_000, sets.FEATURE_SETS, PARAMS)
    second = sets.extract_sets(signal.copy(), 16_000, sets.FEATURE_SETS, PARAMS)
    for name in sets.FEATURE_SETS:
        assert np.array_equal(first[name], second[name], equal_nan=True), name


def test_a_louder_copy_changes_only_level_features():
    quiet, loud = handmade_dict(chirp(amplitude=0.2)), handmade_dict(chirp(amplitude=0.2) * 2.0)
    for name in quiet:
        if name not in LEVEL_FEATURES:
            assert loud[name] == pytest.approx(quiet[name], rel=1e-3, abs=2e-3), name
    assert loud["peak_dbfs"] - quiet["peak_dbfs"] == pytest.approx(20 * np.log10(2), abs=1e-3)
    assert loud["loudness_dbfs"] - quiet["loudness_dbfs"] == pytest.approx(20 * np.log10(2), abs=1e-3)
    assert loud["rms_mean"] == pytest.approx(2 * quiet["rms_mean"], rel=1e-4)
    # c0 of orthonormal MFCCs is the mean log-mel level times sqrt(n_mels)
    shift = 20 * np.log10(2) * np.sqrt(PARAMS["n_mels"])
    assert loud["mfcc_mean_0"] - quiet["mfcc_mean_0"] == pytest.approx(shift, rel=1e-3)


def test_shared_stft_matches_naive_librosa_features():
    librosa = pytest.importorskip("librosa")
    signal = tone(dur=1.3)
    feats = handmade_dict(signal)
    n_mfcc = PARAMS["n_mfcc"]
    mfcc = librosa.feature.mfcc(y=signal, sr=16_000, n_mfcc=n_mfcc, **SPECTRAL)
    ours = np.array([feats[f"mfcc_mean_{i}"] for i in range(n_mfcc)])
    np.testing.assert_allclose(ours, mfcc.mean(axis=1), rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose([feats[f"mfcc_std_{i}"] for i in range(n_mfcc)], mfcc.std(axis=1), atol=1e-2)
    power = np.abs(librosa.stft(signal.astype(np.float64), n_fft=PARAMS["n_fft"], hop_length=256)) ** 2
    chroma = librosa.feature.chroma_stft(S=power, sr=16_000, tuning=0.0)  # S given: no tuning estimate
    np.testing.assert_allclose([feats[f"chroma_mean_{i}"] for i in range(12)], chroma.mean(axis=1), atol=1e-4)
    contrast = librosa.feature.spectral_contrast(S=np.sqrt(power), sr=16_000, n_fft=PARAMS["n_fft"])
    np.testing.assert_allclose(
        [feats[f"contrast_mean_{i}"] for i in range(7)], contrast.mean(axis=1), atol=1e-3
    )
    rms = librosa.feature.rms(y=signal, frame_length=PARAMS["n_fft"], hop_length=256)
    assert feats["rms_mean"] == pytest.approx(rms.mean(), rel=1e-4)


def test_logmel_matches_librosa_on_the_padded_clip():
    librosa = pytest.importorskip("librosa")
    signal = tone(dur=1.3)
    clip = np.pad(signal, (0, int(PARAMS["clip_dur"] * 16_000) - len(signal)))
    mel = librosa.feature.melspectrogram(y=clip, sr=16_000, **SPECTRAL)
    expected = librosa.power_to_db(mel, top_db=80.0)
    got = sets.extract_sets(signal, 16_000, ["logmel"], PARAMS)["logmel"].astype(np.float32)
    np.testing.assert_allclose(got, expected, atol=0.07)  # float16 storage


def test_filterbanks_equal_librosa():
    librosa = pytest.importorskip("librosa")
    for sampling_rate, n_fft, n_mels in [(16_000, 1024, 64), (48_000, 2048, 128), (22_050, 512, 40)]:
        mel = librosa.filters.mel(sr=sampling_rate, n_fft=n_fft, n_mels=n_mels)
        np.testing.assert_allclose(spectral.mel_basis(sampling_rate, n_fft, n_mels), mel, atol=1e-8)
        chroma = librosa.filters.chroma(sr=sampling_rate, n_fft=n_fft, tuning=0.0)
        np.testing.assert_allclose(spectral.chroma_basis(sampling_rate, n_fft), chroma, atol=1e-7)


@pytest.mark.parametrize("dur", [0.3, 2.0, 4.0, 5.1])  # shorter than clip_dur, equal, cut
def test_sets_extracted_together_equal_sets_extracted_alone(dur):
    signal = chirp(dur=dur)
    together = sets.extract_sets(signal, 16_000, ["handmade", "logmel"], PARAMS)
    alone = {name: sets.extract_sets(signal, 16_000, [name], PARAMS)[name] for name in ("handmade", "logmel")}
    np.testing.assert_allclose(together["handmade"], alone["handmade"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        together["logmel"].astype(np.float32), alone["logmel"].astype(np.float32), atol=0.07
    )


@pytest.mark.parametrize("signal", [np.zeros(8000, np.float32), np.zeros(40, np.float32), chirp(dur=0.01)])
def test_silence_and_tiny_clips_give_finite_spectral_features(signal):
    out = sets.extract_sets(signal, 16_000, ["handmade", "logmel", "waveform"], PARAMS)
    assert all(np.isfinite(values.astype(np.float32)).all() for values in out.values())


def test_waveform_is_lossless_for_16_bit_audio():
    pcm = np.random.default_rng(0).integers(-32768, 32767, 5000, dtype=np.int16)
    stored = waveform.extract(pcm.astype(np.float32) / 32768, 16_000)
    assert np.array_equal(stored, pcm)
    assert np.array_equal(waveform.decode(stored), pcm.astype(np.float32) / 32768)
    assert waveform.extract(np.array([1.5, -1.5], np.float32), 16_000).tolist() == [32767, -32768]


def test_egemaps_reused_engine_matches_the_public_api():
    signals = [chirp(dur=1.0), tone(dur=0.8, freq=150.0), chirp(dur=1.2, amplitude=0.05)]
    for signal in signals + signals[::-1]:
        expected = np.asarray(egemaps.smile()(signal, 16_000), dtype=np.float32).reshape(-1)
        assert np.array_equal(egemaps.extract(signal, 16_000), expected, equal_nan=True)


def test_egemaps_falls_back_to_the_public_api_when_the_reused_engine_fails():
    signal = chirp(dur=1.0)
    egemaps.extract(signal, 16_000)  # builds this thread's engine
    key = (egemaps.SET_NAME, 16_000, os.getpid())

    def broken(_signal):
        raise RuntimeError("native failure")

    egemaps._thread_engines()[key] = broken
    expected = np.asarray(egemaps.smile()(signal, 16_000), dtype=np.float32).reshape(-1)
    assert np.array_equal(egemaps.extract(signal, 16_000), expected, equal_nan=True)
    assert key not in egemaps._thread_engines()  # a fresh engine is built for the next clip


def test_unknown_sets_and_missing_params_are_reported():
    with pytest.raises(SerError, match="unknown set 'mfcc'"):
        sets.check_sets(["handmade", "mfcc"])
    with pytest.raises(SerError, match=r"featurize\.n_mels is missing"):
        sets.extract_params(
            SETTINGS["preprocess"], {k: v for k, v in SETTINGS["featurize"].items() if k != "n_mels"}
        )
    with pytest.raises(SerError, match=r"n_mfcc \(80\) exceeds"):
        sets.extract_params(SETTINGS["preprocess"], {**SETTINGS["featurize"], "n_mfcc": 80, "n_mels": 64})


def test_fingerprint_follows_only_the_settings_a_set_reads():
    changed = {**PARAMS, "n_mfcc": PARAMS["n_mfcc"] + 1}
    assert sets.fingerprint("handmade", changed) != sets.fingerprint("handmade", PARAMS)
    assert sets.fingerprint("logmel", changed) == sets.fingerprint("logmel", PARAMS)
    assert sets.fingerprint("waveform", {**PARAMS, "sampling_rate": 8000}) != sets.fingerprint(
        "waveform", PARAMS
    )


def test_chroma_on_float32_audio_does_not_crash_the_process():
    """Regression: librosa 0.11 + numba 0.68 segfault in chroma_stft's tuning estimate on float32.

    Run in a subprocess so that a segfault fails this test instead of killing pytest.
    """
    script = textwrap.dedent(
        f"""
        import numpy as np
        from components.features import sets
        params = {PARAMS!r}
        rng = np.random.default_rng(0)
        signal = (0.3 * np.sin(2 * np.pi * 440 * np.arange(24000) / 16000)
                  + 0.05 * rng.standard_normal(24000)).astype(np.float32)
        out = sets.extract_sets(signal, 16000, ["handmade", "logmel"], params)
        assert signal.dtype == np.float32
        assert all(np.isfinite(v.astype(np.float32)).all() for v in out.values())
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CPU_NAME"}  # no workaround from outside
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert proc.stdout.strip() == "ok"


def test_compare_functionals_match_the_public_api_and_keep_egemaps_apart():
    signal = chirp(dur=1.0)
    expected = np.asarray(egemaps.smile(compare.SET_NAME)(signal, 16_000), dtype=np.float32).reshape(-1)
    for _ in range(2):  # the second call runs the reused engine after a reset
        assert np.array_equal(compare.extract(signal, 16_000), expected, equal_nan=True)
    assert len(set(compare.feature_names())) == compare.N_FEATURES
    assert egemaps.extract(signal, 16_000).shape == (egemaps.N_FEATURES,)  # its own engine, not ComParE's
