"""Metrics against hand-computed examples, the fold summary, the figure, the table, speaker normalisation."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from sklearn.metrics import balanced_accuracy_score, f1_score

from components.errors import SerError
from components.evaluation.dataset import Dataset
from components.evaluation.metrics import compute_metrics, format_table, plot_confusion, summarize_folds
from components.evaluation.normalize import normalize_per_speaker, normalize_sequences_per_speaker

# 3 neutral, 2 happy, 1 angry; hand-worked below.
Y_TRUE = [1, 1, 1, 3, 3, 5]
Y_PRED = [1, 1, 3, 3, 5, 5]


def test_compute_metrics_matches_hand_computation():
    result = compute_metrics(Y_TRUE, Y_PRED)
    assert result["class_names"] == ["neutral", "happy", "angry"] and result["classes"] == [1, 3, 5]
    assert result["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert result["n"] == 6
    assert result["accuracy"] == pytest.approx(4 / 6)
    # recalls 2/3, 1/2, 1 -> UAR 13/18; precisions 1, 1/2, 1/2
    assert result["uar"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    f1 = {"neutral": 0.8, "happy": 0.5, "angry": 2 / 3}
    for name, value in f1.items():
        assert result["per_class"][name]["f1"] == pytest.approx(value)
    assert result["per_class"]["neutral"] == pytest.approx(
        {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3}
    )
    assert result["macro_f1"] == pytest.approx(sum(f1.values()) / 3)
    assert result["weighted_f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)
    assert result["uar"] == pytest.approx(balanced_accuracy_score(Y_TRUE, Y_PRED))
    assert result["weighted_f1"] == pytest.approx(f1_score(Y_TRUE, Y_PRED, average="weighted"))


def test_absent_classes_score_zero_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = compute_metrics([1, 2, 2, 4], [1, 1, 1, 1], classes=range(1, 9))
    assert len(result["confusion"]) == 8 and result["class_names"][-1] == "surprised"
    assert result["per_class"]["calm"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert result["per_class"]["surprised"]["support"] == 0
    assert result["uar"] == pytest.approx(1 / 3)  # over the 3 classes that occur in y_true
    assert result["macro_f1"] == pytest.approx(
        f1_score([1, 2, 2, 4], [1] * 4, average="macro", zero_division=0)
    )


@pytest.mark.parametrize(
    ("y_true", "y_pred", "classes", "message"),
    [
        ([], [], None, "at least one"),
        ([1, 2], [1], None, "as many"),
        ([0, 1], [0, 1], None, "not emotion codes"),
        ([1, 2], [1, 3], [1, 2], "not in classes"),
    ],
)
def test_compute_metrics_rejects_bad_input(y_true, y_pred, classes, message):
    with pytest.raises(SerError, match=message):
        compute_metrics(y_true, y_pred, classes)


def test_summarize_folds_mean_sd_and_pooled_confusion():
    folds = [
        compute_metrics([1, 3], [1, 3], classes=[1, 3]),
        compute_metrics([1, 3], [1, 1], classes=[1, 3]),
        compute_metrics([1, 3], [3, 1], classes=[1, 3]),
    ]
    summary = summarize_folds(folds)
    assert summary["n_folds"] == 3
    assert summary["accuracy_mean"] == pytest.approx(0.5)
    assert summary["accuracy_sd"] == pytest.approx(0.5)  # sample sd of 1, 0.5, 0
    assert summary["uar_sd"] == pytest.approx(np.std([1, 0.5, 0], ddof=1))
    assert summary["confusion"] == [[2, 1], [2, 1]]
    assert summary["class_names"] == ["neutral", "happy"]
    assert math.isnan(summarize_folds(folds[:1])["accuracy_sd"])
    with pytest.raises(SerError, match="different classes"):
        summarize_folds([folds[0], compute_metrics([1, 2], [1, 2])])
    with pytest.raises(SerError):
        summarize_folds([])


def test_plot_confusion_returns_a_savable_figure():
    result = compute_metrics(Y_TRUE, Y_PRED)
    fig = plot_confusion(result["confusion"], result["class_names"], "fold 1")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["2", "1", "0", "0", "1", "1", "0", "0", "1"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["neutral", "happy", "angry"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["neutral", "happy", "angry"]
    assert ax.get_title() == "fold 1"
    shares = ax.images[0].get_array()
    np.testing.assert_allclose(np.asarray(shares).sum(axis=1), 1.0)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SerError, match="does not match"):
        plot_confusion([[1, 2]], ["a"], "bad")


def test_format_table():
    rows = [
        {"model": "svm", "uar": 0.51234, "n_folds": 6},
        {"model": "crnn", "uar": float("nan")},
    ]
    table = format_table(rows, ["model", "uar", "n_folds"]).splitlines()
    assert table[0] == "| model |   uar | n_folds |"
    assert table[1] == "| ----- | ----: | ------: |"
    assert table[2] == "| svm   | 0.512 |       6 |"
    assert table[3] == "| crnn  |   n/a |         |"


def test_normalize_per_speaker_standardises_each_speaker():
    rng = np.random.default_rng(0)
    speakers = np.repeat([1, 2, 3], 20)
    features = rng.normal(size=(60, 4)) * [1, 5, 0.1, 2] + [0, 10, -3, 100]
    features[speakers == 2] += 50.0  # a louder, higher voice
    out = normalize_per_speaker(features, speakers)
    for speaker in (1, 2, 3):
        rows = out[speakers == speaker]
        np.testing.assert_allclose(rows.mean(axis=0), 0.0, atol=1e-9)
        np.testing.assert_allclose(rows.std(axis=0), 1.0, atol=1e-9)
    shifted = features.copy()
    shifted[speakers == 3] += 7.0
    np.testing.assert_allclose(normalize_per_speaker(shifted, speakers), out, atol=1e-9)


def test_normalize_per_speaker_keeps_constant_columns_finite_and_rejects_bad_input():
    features = np.ones((6, 2), dtype=np.float32)
    features[:, 1] = [1, 2, 3, 4, 5, 6]
    out = normalize_per_speaker(features, np.array([7, 7, 7, 8, 8, 8]))
    assert out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_array_equal(out[:, 0], 0.0)
    with pytest.raises(SerError, match="fewer than 2 clips"):
        normalize_per_speaker(features, np.array([7, 7, 7, 8, 8, 9]))
    with pytest.raises(SerError, match="one row per speaker"):
        normalize_per_speaker(features, np.array([7, 7]))
    features[0, 0] = np.nan
    with pytest.raises(SerError, match="NaN"):
        normalize_per_speaker(features, np.array([7, 7, 7, 8, 8, 8]))


def _padded_sequences(rng: np.random.Generator, speakers: np.ndarray) -> np.ndarray:
    """``[n, 3, 10]`` float16 frames, each clip padded with all-zero frames after its own length."""
    sequences = rng.normal(size=(len(speakers), 3, 10)) * [[1.0], [4.0], [0.5]] + [[2.0], [-8.0], [30.0]]
    for clip, length in enumerate(rng.integers(4, 11, size=len(speakers))):
        sequences[clip, :, length:] = 0.0
    return sequences.astype(np.float16)


def test_normalize_sequences_per_speaker_standardises_frames_and_keeps_padding():
    rng = np.random.default_rng(0)
    speakers = np.repeat([1, 2], 6)
    sequences = _padded_sequences(rng, speakers)
    padding = ~sequences.any(axis=1)  # [n, T]
    assert padding.any() and not padding.all()
    out = normalize_sequences_per_speaker(sequences, speakers)
    assert out.dtype == np.float16 and out.shape == sequences.shape
    np.testing.assert_array_equal(~out.any(axis=1), padding)  # padding stays zero, frames stay frames
    for speaker in (1, 2):
        rows = speakers == speaker
        frames = out[rows].astype(np.float64).transpose(0, 2, 1)[~padding[rows]]  # [frames, channels]
        np.testing.assert_allclose(frames.mean(axis=0), 0.0, atol=2e-3)
        np.testing.assert_allclose(frames.std(axis=0), 1.0, atol=2e-3)
    # a speaker who is louder and more spread out (non-padding frames only) ends up the same
    other = sequences.astype(np.float64)
    other[speakers == 2] = other[speakers == 2] * 3.0 + np.where(padding[speakers == 2][:, None], 0.0, 5.0)
    moved = normalize_sequences_per_speaker(other.astype(np.float32), speakers)
    np.testing.assert_allclose(moved, out.astype(np.float32), atol=2e-2)


def test_normalize_sequences_per_speaker_rejects_bad_input():
    sequences = _padded_sequences(np.random.default_rng(1), np.repeat([1, 2], 2)).astype(np.float32)
    with pytest.raises(SerError, match="fewer than 2 clips"):
        normalize_sequences_per_speaker(sequences, np.array([1, 1, 1, 2]))
    with pytest.raises(SerError, match="one clip per speaker id"):
        normalize_sequences_per_speaker(sequences, np.array([1, 1, 2]))
    with pytest.raises(SerError, match="n_channels, n_frames"):
        normalize_sequences_per_speaker(sequences[:, :, 0], np.array([1, 1, 2, 2]))
    silent = sequences.copy()
    silent[2:] = 0.0
    with pytest.raises(SerError, match="speaker 2: every frame"):
        normalize_sequences_per_speaker(silent, np.array([1, 1, 2, 2]))
    sequences[3, 0, 0] = np.inf
    with pytest.raises(SerError, match="1 clip\\(s\\) of speaker 2 have NaN or infinite"):
        normalize_sequences_per_speaker(sequences, np.array([1, 1, 2, 2]))


def test_dataset_normalized_per_speaker_normalises_the_sequence_set():
    rng = np.random.default_rng(2)
    actors = np.repeat([3, 4], 4)
    labels = pd.DataFrame({"clip_id": [f"c{i}" for i in range(8)], "actor": actors})
    sequences = _padded_sequences(rng, actors)
    data = Dataset(labels, {"handmade": rng.normal(size=(8, 2))}, sequences.copy())
    normalised = data.normalized_per_speaker()
    np.testing.assert_array_equal(normalised.logmel, normalize_sequences_per_speaker(sequences, actors))
    np.testing.assert_array_equal(
        normalised.stats["handmade"], normalize_per_speaker(data.stats["handmade"], actors)
    )
    assert normalised.logmel.dtype == np.float16
    np.testing.assert_array_equal(data.logmel, sequences)  # the original is left alone
    assert Dataset(labels, data.stats).normalized_per_speaker().logmel is None
