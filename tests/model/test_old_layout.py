"""A model registered before the redesign (library code in flows/, components/serving.py) still
loads and predicts with today's code."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import ROOT

OLD_COMMIT = "75dfd61"  # the last commit with the old layout
REGISTER = textwrap.dedent(
    """
    import numpy as np
    from components.features.sets import extract_params, feature_names
    from components.models import build_model
    from components.ravdess import EMOTIONS
    from components.serving import EmotionPredictor
    from flows.model_io import register_predictor
    from flows.params import load_params

    params = load_params("params.yaml")
    extract = extract_params(params["preprocess"], params["featurize"])
    X = np.random.default_rng(0).normal(size=(80, len(feature_names("handmade", extract))))
    model = build_model("logreg").fit(X.astype("float32"), np.array(list(EMOTIONS) * 10))
    predictor = EmotionPredictor(model, ("handmade",), False, extract, {"model": "logreg", "kind": "logreg"})
    tags = {"model_name": "logreg", "model_kind": "logreg", "protocol": "actor-kfold", "subset": "all",
            "primary_metric": "uar", "primary_metric_value": "0.5", "data_version": "old-layout"}
    register_predictor(predictor, "ravdess-emotion", tags, "champion")
    """
)


@pytest.fixture
def old_tree(tmp_path):
    """The project's code at the last commit before the redesign (needs the git history)."""
    found = subprocess.run(
        ["git", "cat-file", "-e", f"{OLD_COMMIT}^{{commit}}"], cwd=ROOT, capture_output=True
    )
    if found.returncode != 0:
        pytest.skip(f"commit {OLD_COMMIT} is not in this clone's history (shallow clone)")
    tree = tmp_path / "old"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "archive", OLD_COMMIT, "components", "flows", "params.yaml"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def test_a_model_registered_with_the_old_layout_loads_and_predicts(old_tree, tmp_path, mlflow_template):
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy(mlflow_template, store / "mlflow.db")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(old_tree), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", REGISTER], cwd=old_tree, env=env, check=True, capture_output=True)

    rate = 16000
    t = np.arange(int(2.5 * rate)) / rate
    signal = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    wav = tmp_path / "clip.wav"
    sf.write(wav, signal.astype(np.float32), rate)
    # today's code, in a fresh process: the old pickles name components.serving.EmotionPyfunc
    code = (
        "import json, sys; from components.registry.model_io import load_model;"
        "from components.serving.predict import predict_files;"
        f"model = load_model('models:/ravdess-emotion@champion');"
        f"results = predict_files([r'{wav}'], model.predict_signals, model.clip_dur);"
        "print(json.dumps([r.label for r in results]))"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    labels = done.stdout.strip().splitlines()[-1]
    assert labels.startswith('["') and labels.strip('[]"') in {
        "neutral",
        "calm",
        "happy",
        "sad",
        "angry",
        "fearful",
        "disgust",
        "surprised",
    }
