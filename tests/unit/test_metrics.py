"""Metrics against hand-computed examples, the fold summary, the figure, the table, speaker normalisation."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
from matplotlib.figure import Figure
from sklearn.metrics import balanced_accuracy_score, f1_score

from components.errors import SerError
from components.evaluation.metrics import compute_metrics, format_table, plot_confusion, summarize_folds
from components.evaluation.normalize import normalize_per_speaker

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
