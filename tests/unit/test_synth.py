"""The synthetic demo corpus: RAVDESS layout, WAV format, determinism, and learnable emotion."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from components.data.audio import load_clip
from components.data.ravdess import expected_clips, parse_name
from components.data.synth import corpus_labels, synthesize_clip, write_corpus
from components.errors import SerError

N_ACTORS = 4  # two men, two women: enough for a held-out-speaker check, quick to write
LEVEL, F0 = 40, 43  # feature columns: mean active level (dB), median log2 F0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A four-actor demo corpus at 48 kHz, written with two worker processes."""
    root = tmp_path_factory.mktemp("demo")
    summary = write_corpus(root, n_actors=N_ACTORS, seed=0, n_jobs=2)
    assert (summary.n_clips, summary.n_actors) == (N_ACTORS * 104, N_ACTORS)
    return root


@pytest.fixture(scope="module")
def features(corpus: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per clip at 16 kHz: MFCC means/stds, level and F0 stats; with emotion and actor labels."""
    rows, emotions, actors = [], [], []
    for path in sorted(corpus.rglob("*.wav")):
        labels = parse_name(path)
        rows.append(_clip_features(load_clip(path, clip_dur=None)))
        emotions.append(labels.emotion)
        actors.append(labels.actor)
    return np.array(rows), np.array(emotions), np.array(actors)


def _clip_features(signal: np.ndarray, sampling_rate: int = 16_000) -> np.ndarray:
    """MFCC means/stds over the active frames, then level (dB) and log2-F0 statistics."""
    frames = {"frame_length": 1024, "hop_length": 256}  # 64 ms frames, 16 ms hops
    level = 20 * np.log10(librosa.feature.rms(y=signal, **frames)[0] + 1e-6)
    active = level > level.max() - 30
    mfcc = librosa.feature.mfcc(y=signal, sr=sampling_rate, n_mfcc=20, n_fft=1024, hop_length=256, n_mels=40)
    mfcc = mfcc[:, : len(active)][:, active]
    f0 = np.log2(librosa.yin(signal, fmin=60, fmax=600, sr=sampling_rate, **frames)[: len(active)][active])
    return np.concatenate(
        [
            mfcc.mean(axis=1),
            mfcc.std(axis=1),
            [level[active].mean(), level[active].std(), active.mean()],
            [np.median(f0), f0.std(), np.percentile(f0, 90) - np.percentile(f0, 10)],
        ]
    )


def _read(path: Path) -> np.ndarray:
    signal, _ = sf.read(path, dtype="float32")
    return signal


def _rms_db(signal: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(signal.astype(np.float64) ** 2) + 1e-20))


def test_layout_and_names_match_ravdess(corpus: Path) -> None:
    for actor in range(1, N_ACTORS + 1):
        for channel, n_clips in ((1, 60), (2, 44)):
            labels = expected_clips(channel)
            folder = corpus / labels[0].channel_name / f"Actor_{actor:02d}"
            names = sorted(path.name for path in folder.iterdir())
            expected = sorted(f"{replace(clip, actor=actor).clip_id}.wav" for clip in labels)
            assert len(names) == n_clips
            assert names == expected  # also: no temporary files left behind
    for path in corpus.rglob("*.wav"):
        labels = parse_name(path)
        assert path.parent.name == f"Actor_{labels.actor:02d}"
        assert path.parent.parent.name == labels.channel_name
        assert labels.modality == 3
    assert sorted(p.name for p in corpus.iterdir()) == ["song", "speech"]


def test_files_are_48k_16bit_mono_and_start_quiet(corpus: Path) -> None:
    for path in sorted(corpus.rglob("*.wav")):
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype, info.format) == (48_000, 1, "PCM_16", "WAV")
        assert 2.5 <= info.duration <= 5.0, path.name
        signal = _read(path)
        lead, mid = signal[:24_000], signal[len(signal) // 2 - 12_000 : len(signal) // 2 + 12_000]
        assert _rms_db(mid) - _rms_db(lead) > 20, path.name  # leading half second is near-silence
        assert _rms_db(lead) < -60 and np.abs(signal).max() < 1.0


def test_same_seed_gives_identical_bytes_for_any_n_jobs_and_actor_list(corpus: Path, tmp_path: Path) -> None:
    summary = write_corpus(tmp_path, actors=[2], seed=0, n_jobs=1)
    written = sorted(tmp_path.rglob("*.wav"))
    assert summary.n_clips == len(written) == 104
    for path in written:
        assert path.read_bytes() == (corpus / path.relative_to(tmp_path)).read_bytes(), path.name


def test_other_seed_gives_other_files(corpus: Path, tmp_path: Path) -> None:
    write_corpus(tmp_path, actors=[1], seed=1, n_jobs=1)
    for path in sorted(tmp_path.rglob("*.wav")):
        assert path.read_bytes() != (corpus / path.relative_to(tmp_path)).read_bytes(), path.name


def test_synthesize_clip_is_float32_mono_at_any_rate() -> None:
    labels = corpus_labels([3])[0]
    for rate in (16_000, 22_050, 48_000):
        signal = synthesize_clip(labels, sampling_rate=rate, seed=0)
        assert signal.dtype == np.float32 and signal.ndim == 1
        assert np.isfinite(signal).all() and np.abs(signal).max() < 1.0
        assert 2.5 <= len(signal) / rate <= 5.0
    assert np.array_equal(synthesize_clip(labels, 16_000, 7), synthesize_clip(labels, 16_000, 7))


def test_actor_18_has_no_song_like_ravdess() -> None:
    labels = corpus_labels([17, 18])
    assert sum(clip.actor == 18 for clip in labels) == 60
    assert {clip.vocal_channel for clip in labels if clip.actor == 17} == {1, 2}


def test_unwritable_out_dir_raises_ser_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the corpus folder should go")
    with pytest.raises(SerError, match="cannot create"):
        write_corpus(blocker, actors=[1], n_jobs=1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"actors": [25]},
        {"actors": [3, 3]},
        {"n_actors": 0},
        {"seed": -1},
        {"sampling_rate": 8000},
        {"n_jobs": 0},
    ],
)
def test_bad_settings_raise_ser_error(kwargs: dict, tmp_path: Path) -> None:
    with pytest.raises(SerError):
        write_corpus(tmp_path, **kwargs)
    assert not any(tmp_path.rglob("*.wav"))


def test_emotion_cues_go_the_documented_way(features: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    x, emotions, _ = features
    level = {emotion: np.median(x[emotions == emotion, LEVEL]) for emotion in range(1, 9)}
    f0 = {emotion: 12 * np.median(x[emotions == emotion, F0]) for emotion in range(1, 9)}  # semitones
    assert level[5] > level[1] + 6 and level[1] > level[4] + 2  # angry loud, sad quiet (dB)
    assert f0[6] > f0[1] + 2 and f0[8] > f0[1] + 2 and f0[1] > f0[4]  # fearful, surprised high; sad low


def test_emotion_is_learnable_for_a_new_speaker_but_not_perfectly(
    features: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    x, emotions, actors = features
    x = x.copy()
    # Standardise each actor's features, as speaker-independent SER usually does.
    for actor in np.unique(actors):
        mine = actors == actor
        x[mine] = (x[mine] - x[mine].mean(axis=0)) / (x[mine].std(axis=0) + 1e-9)
    accuracies = []
    for held_out in np.unique(actors):
        train = actors != held_out
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=2000))
        model.fit(x[train], emotions[train])
        accuracies.append(float(np.mean(model.predict(x[~train]) == emotions[~train])))
    print(f"held-out-actor accuracy per actor: {np.round(accuracies, 3)}")  # chance is 1/8
    assert min(accuracies) > 0.3
    assert max(accuracies) < 0.98
