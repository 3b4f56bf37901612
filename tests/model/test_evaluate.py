"""Evaluation of a model section end to end on the generated demo corpus: the ensemble kind."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import soundfile as sf
import torch

from components.data.ravdess import EMOTIONS
from components.evaluation.dataset import load_dataset
from components.evaluation.evaluate import ModelSpec, evaluate_splits, fit_on_rows
from components.evaluation.protocols import actor_kfold
from components.features.sets import extract_params
from components.serving.pyfunc import EmotionPredictor
from components.settings import load_params
from tests.conftest import ROOT

SECTION = {  # a params.yaml section, small enough for a test
    "kind": "ensemble",
    "members": {
        "svm": {"kind": "svm", "features": ["handmade"], "logmel_stats": True},
        "logreg": {"kind": "logreg", "features": ["handmade"], "C": 0.1},
        "cnn": {"kind": "cnn", "features": ["handmade"], "n_filters": 16, "dense_units": 16, "epochs": 2},
    },
}


def test_ensemble_section_beats_chance_speaker_independently_and_serves_raw_audio(demo_features):
    torch.set_num_threads(1)
    spec = ModelSpec.from_params("ensemble", SECTION)
    assert spec.stats_sets == ("handmade",) and spec.uses_logmel and spec.early_stops
    data = load_dataset(demo_features / "data" / "features", spec.stats_sets, spec.uses_logmel)
    splits = actor_kfold(data.labels, n_folds=2, n_val_actors=1)
    result = evaluate_splits(spec, data, splits, "actor-kfold", "all")
    assert result.summary["accuracy_mean"] > 0.25  # chance is 1/8 on 8 emotions

    model = fit_on_rows(spec, data, splits[0].train, splits[0].val)
    params = load_params(ROOT / "params.yaml")
    extract = extract_params(params["preprocess"], params["featurize"])
    predictor = pickle.loads(
        pickle.dumps(
            EmotionPredictor(model, spec.stats_sets, spec.uses_logmel, extract, {"model": "ensemble"})
        )
    )
    wav = sorted((demo_features / "data" / "raw" / "speech").rglob("*.wav"))[0]
    signal, rate = sf.read(wav, dtype="float32")
    table = predictor.predict_signals([(signal, rate), (signal * 0.5, rate)])
    probabilities = table.filter(like="prob_").to_numpy()
    assert np.allclose(probabilities.sum(axis=1), 1.0) and len(table) == 2
    assert table["label"].iloc[0] == table["label"].iloc[1]  # a quieter copy gets the same label


def test_classical_model_with_log_mel_functionals_trains_on_validation_actors_too(demo_features):
    spec = ModelSpec.from_params("svm_lms", {"kind": "svm", "features": ["handmade"], "logmel_stats": True})
    assert spec.uses_logmel and not spec.early_stops  # reads log-mel, but has no early stopping
    data = load_dataset(demo_features / "data" / "features", spec.stats_sets, spec.uses_logmel)
    splits = actor_kfold(data.labels, n_folds=2, n_val_actors=1)
    result = evaluate_splits(spec, data, splits, "actor-kfold", "all")
    for fold, split in zip(result.folds, splits, strict=True):
        assert fold.n_train == len(split.train) + len(split.val)
    assert result.summary["accuracy_mean"] > 0.25


def test_logreg_compare_section_reads_compare_features_and_serves_raw_audio(demo_features, tmp_path):
    from components.errors import SerError
    from components.features.featurize import featurize

    params = load_params(ROOT / "params.yaml")
    spec = ModelSpec.from_params("logreg_compare", params["logreg_compare"])
    assert spec.stats_sets == ("handmade", "egemaps", "compare") and not spec.uses_logmel
    try:
        load_dataset(demo_features / "data" / "features", spec.stats_sets, False)
    except SerError as error:
        assert "add egemaps to featurize.feature_sets" in str(error)
    else:
        raise AssertionError("a missing feature table must be named")
    clips = pd.read_parquet(demo_features / "data" / "metadata" / "clips.parquet")
    clips = clips[clips["actor"].isin([1, 2, 3])]  # 3 actors keep openSMILE's ComParE pass short
    extract = extract_params(params["preprocess"], params["featurize"])
    featurize(clips, tmp_path, list(spec.stats_sets), extract, n_jobs=2, progress=False)
    data = load_dataset(tmp_path, spec.stats_sets, False)
    assert data.stats["compare"].shape == (len(clips), 6373)
    splits = actor_kfold(data.labels, n_folds=3, n_val_actors=1)
    result = evaluate_splits(spec, data, splits, "actor-kfold", "all")
    assert result.summary["accuracy_mean"] > 0.25  # chance is 1/8

    model = fit_on_rows(spec, data, splits[0].train, splits[0].val)
    predictor = EmotionPredictor(model, spec.stats_sets, False, extract, {"model": "logreg_compare"})
    wav = sorted((demo_features / "data" / "raw" / "speech").rglob("*.wav"))[0]
    signal, rate = sf.read(wav, dtype="float32")
    table = predictor.predict_signals([(signal, rate)])
    assert table["label"].iloc[0] in {EMOTIONS[code] for code in data.labels["emotion"]}


def test_subset_all_also_scores_speech_and_song_apart_with_the_same_models(demo_features):
    spec = ModelSpec.from_params("logreg", {"kind": "logreg", "features": ["handmade"], "C": 0.1})
    data = load_dataset(demo_features / "data" / "features", spec.stats_sets, spec.uses_logmel)
    splits = actor_kfold(data.labels, n_folds=2, n_val_actors=1)
    result = evaluate_splits(spec, data, splits, "actor-kfold", "all")
    for fold in result.folds:
        speech, song = fold.by_channel["speech"], fold.by_channel["song"]
        assert speech["n"] + song["n"] == fold.n_test  # every test clip, in one channel or the other
        mixed = (speech["accuracy"] * speech["n"] + song["accuracy"] * song["n"]) / fold.n_test
        assert np.isclose(mixed, fold.metrics["accuracy"])  # the same predictions, split by channel
        assert sum(sum(row) for row in speech["confusion"]) == speech["n"]
    by_channel = result.summary["by_channel"]
    assert by_channel["speech"]["n_folds"] == 2
    assert np.isclose(
        by_channel["speech"]["accuracy_mean"],
        np.mean([f.by_channel["speech"]["accuracy"] for f in result.folds]),
    )
    speech_only = data.subset((data.labels["vocal_channel"] == 1).to_numpy())
    alone = evaluate_splits(spec, speech_only, actor_kfold(speech_only.labels, 2, 1), "actor-kfold", "speech")
    assert "by_channel" not in alone.summary and not alone.folds[0].by_channel
