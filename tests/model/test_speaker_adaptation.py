"""Speaker adaptation: each speaker's clips re-centred on the training mean, in every way of predicting."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli import app
from components.errors import SerError
from components.serving.adaptation import (
    ADAPTATION_COLUMN,
    STATS_KEY,
    adapt_by_speaker,
    assign_speakers,
    recorded_stats,
    training_stats,
)
from tests.conftest import ROOT
from tests.model.test_predict import fit_tiny_predictor

MODEL_NAME = "ravdess-emotion"
PATTERN = r"(?P<speaker>\d\d)\.wav$"  # RAVDESS names end with the actor


def adapted_predictor(features_dir: Path, min_clips: int = 4):
    """The tiny logistic regression with its training mean recorded, as publish records it."""
    from components.evaluation.dataset import load_dataset

    predictor = fit_tiny_predictor(features_dir)
    stats = load_dataset(features_dir, ["handmade"], False).inputs(None, ["handmade"], False)["stats"]
    predictor.info[STATS_KEY] = training_stats(stats, min_clips)
    return predictor


def test_a_shifted_speaker_is_moved_back_and_a_small_one_is_left_alone():
    rng = np.random.default_rng(0)
    reference = np.zeros(3)
    stats = np.vstack([rng.normal(5.0, 1.0, (6, 3)), rng.normal(-2.0, 1.0, (2, 3))])
    speakers = ["a"] * 6 + ["b"] * 2
    adapted, notes = adapt_by_speaker(stats, speakers, reference, min_clips=4)
    assert np.allclose(adapted[:6].mean(axis=0), reference)  # speaker a: its mean is the training mean
    assert np.allclose(adapted[:6].std(axis=0), stats[:6].std(axis=0))  # its spread is kept
    assert np.array_equal(adapted[6:], stats[6:])  # speaker b: 2 clips, below the minimum
    assert notes["a"].adapted and notes["a"].line() == "speaker a: adapted (6 clips)"
    assert not notes["b"].adapted and notes["b"].line() == "speaker b: plain (2 clips, fewer than 4)"
    with pytest.raises(SerError, match="do not fit the model's training mean"):
        adapt_by_speaker(stats, speakers, np.zeros(5), min_clips=4)


def test_adapted_predictions_ignore_a_constant_shift_of_a_speakers_features(demo_features):
    """A speaker whose features are all shifted (another microphone, another voice) changes the plain
    model's answers; adapted, the shift is taken out and the answers are those of the unshifted clips."""
    from components.evaluation.dataset import load_dataset

    features = demo_features / "data" / "features"
    predictor = adapted_predictor(features)
    data = load_dataset(features, ["handmade"], False)
    rows = np.flatnonzero(data.labels["actor"].to_numpy() == 2)
    X = data.inputs(rows, ["handmade"], False)
    shifted = X["stats"] + np.asarray(X["stats"]).std(axis=0) * 1.5
    reference = np.asarray(predictor.info[STATS_KEY]["mean"])
    speakers = ["02"] * len(rows)

    def predicted(stats: np.ndarray) -> np.ndarray:
        return predictor.model.predict({**X, "stats": stats})

    assert (predicted(shifted) != predicted(X["stats"])).mean() > 0.2  # the plain model is thrown off
    original, _ = adapt_by_speaker(X["stats"], speakers, reference, min_clips=4)
    moved, notes = adapt_by_speaker(shifted, speakers, reference, min_clips=4)
    assert notes["02"].adapted
    assert np.array_equal(predicted(moved), predicted(original))
    proba = predictor.model.predict_proba
    assert not np.allclose(proba({**X, "stats": original}), proba(X))  # adaptation changes predictions


def test_speakers_from_a_pattern_a_folder_or_a_csv_list(tmp_path):
    paths = [tmp_path / "x" / "03-01-05-01-01-01-07.wav", tmp_path / "y" / "notes-a.wav"]
    assert assign_speakers(paths, pattern=PATTERN) == ["07", None]
    assert assign_speakers(paths, source="folder") == [str(tmp_path / "x"), str(tmp_path / "y")]
    listed = tmp_path / "speakers.csv"
    listed.write_text("path,speaker\ny/notes-a.wav,anna\n")
    assert assign_speakers(paths, source=str(listed)) == [None, "anna"]
    with pytest.raises(SerError, match=re.escape("needs a named group (?P<speaker>...)")):
        assign_speakers(paths, pattern=r"\d\d")
    with pytest.raises(SerError, match="not a regular expression"):
        assign_speakers(paths, pattern="(?P<speaker>")
    with pytest.raises(SerError, match="one of --speaker-pattern or --speaker-from"):
        assign_speakers(paths)
    with pytest.raises(SerError, match="give 'folder' or a CSV file"):
        assign_speakers(paths, source="nonsense")


def test_a_model_without_training_statistics_refuses_adaptation(demo_features):
    predictor = fit_tiny_predictor(demo_features / "data" / "features")
    with pytest.raises(SerError, match="no training statistics recorded with it"):
        recorded_stats(predictor, "models:/old/1")


@pytest.fixture(scope="module")
def pyfunc_models(tmp_path_factory, mlflow_template, demo_features) -> Iterator[dict[str, str]]:
    """Two logged raw-audio pyfuncs, with and without recorded training statistics."""
    import mlflow

    from components.registry.model_io import log_predictor

    root = tmp_path_factory.mktemp("adaptation-pyfunc")
    shutil.copy(mlflow_template, root / "mlflow.db")
    features = demo_features / "data" / "features"
    uris = {"store": f"sqlite:///{root / 'mlflow.db'}"}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        mlflow.set_tracking_uri(uris["store"])
        # its own experiment: an earlier test's active experiment id may not exist in this store
        experiment = mlflow.MlflowClient(uris["store"]).create_experiment("adaptation")
        try:
            for name, predictor in (
                ("adapting", adapted_predictor(features)),
                ("old", fit_tiny_predictor(features)),
            ):
                with mlflow.start_run(experiment_id=experiment):
                    uris[name] = log_predictor(predictor)
            yield uris
        finally:
            mlflow.set_tracking_uri(None)


def actor_clips(demo_features: Path, actor: int, n: int) -> list[Path]:
    folder = demo_features / "data" / "raw" / "speech" / f"Actor_{actor:02d}"
    return sorted(folder.glob("*.wav"))[:n]


def test_pyfunc_adapts_rows_that_share_a_speaker_column(pyfunc_models, demo_features, tmp_path):
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(pyfunc_models["store"])
    paths = [*actor_clips(demo_features, 2, 6), *actor_clips(demo_features, 3, 2)]
    rows = pd.DataFrame({"path": [str(p) for p in paths], "speaker": ["02"] * 6 + ["03"] * 2})
    model = mlflow.pyfunc.load_model(pyfunc_models["adapting"], model_config={"allow_paths": True})
    plain = model.predict(rows[["path"]])
    adapted = model.predict(rows)
    assert ADAPTATION_COLUMN not in plain.columns
    assert (
        adapted[ADAPTATION_COLUMN].tolist()
        == ["adapted (6 clips)"] * 6 + ["plain (2 clips, fewer than 4)"] * 2
    )
    probs = [c for c in plain.columns if c.startswith("prob_")]
    assert not np.allclose(adapted[probs].to_numpy()[:6], plain[probs].to_numpy()[:6])
    assert np.allclose(
        adapted[probs].to_numpy()[6:], plain[probs].to_numpy()[6:]
    )  # the fallback is the plain model
    served = mlflow.pyfunc.load_model(
        pyfunc_models["adapting"], model_config={"allow_paths": True, "speaker_min_clips": 2}
    )
    assert served.predict(rows)[ADAPTATION_COLUMN].tolist()[-1] == "adapted (2 clips)"
    old = mlflow.pyfunc.load_model(pyfunc_models["old"], model_config={"allow_paths": True})
    with pytest.raises(MlflowException, match="no training statistics recorded with it"):
        old.predict(rows)
    assert len(old.predict(rows[["path"]])) == len(rows)  # without a speaker column it predicts as ever


@pytest.fixture
def adapting_store(tmp_path, mlflow_template, demo_features, monkeypatch) -> Iterator[str]:
    """A store whose champion recorded its training statistics (and an old version 1 that did not)."""
    import mlflow

    from components.registry.model_io import register_predictor
    from components.registry.promote import CHAMPION

    shutil.copy(mlflow_template, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    features = demo_features / "data" / "features"
    tags = {"model_name": "logreg", "model_kind": "logreg", "protocol": "actor-kfold", "subset": "all"}
    with monkeypatch.context() as patch:
        patch.chdir(tmp_path)
        register_predictor(fit_tiny_predictor(features), MODEL_NAME, tags)
        register_predictor(adapted_predictor(features), MODEL_NAME, tags, CHAMPION)
    yield uri
    mlflow.set_tracking_uri(None)


@pytest.fixture
def two_speakers(demo_features, tmp_path) -> Path:
    """Eight clips of actor 02 and three of actor 03 in one folder (a RAVDESS name ends with the actor)."""
    out = tmp_path / "in"
    out.mkdir()
    for path in [*actor_clips(demo_features, 2, 8), *actor_clips(demo_features, 3, 3)]:
        shutil.copy(path, out / path.name)
    return out


def read_probs(csv: Path) -> pd.DataFrame:
    table = pd.read_csv(csv).set_index("file").sort_index()
    return table[[c for c in table.columns if c.startswith("prob_")]]


def test_ser_predict_with_a_speaker_pattern(adapting_store, two_speakers, tmp_path):
    runner = CliRunner()
    plain = runner.invoke(app, ["predict", str(two_speakers), "--csv", str(tmp_path / "plain.csv")])
    assert plain.exit_code == 0, plain.output
    args = [
        "predict",
        str(two_speakers),
        "--speaker-pattern",
        PATTERN,
        "--csv",
        str(tmp_path / "adapted.csv"),
    ]
    adapted = runner.invoke(app, args)
    assert adapted.exit_code == 0, adapted.output
    assert "speaker 02: adapted (8 clips)" in adapted.stderr
    assert "speaker 03: plain (3 clips, fewer than 4)" in adapted.stderr
    before, after = read_probs(tmp_path / "plain.csv"), read_probs(tmp_path / "adapted.csv")
    assert "adaptation" not in pd.read_csv(tmp_path / "plain.csv").columns  # no speakers: no column
    said = pd.read_csv(tmp_path / "adapted.csv", dtype={"speaker": str}).set_index("file").sort_index()
    actor_02 = before.index.str.endswith("02.wav")
    assert said.loc[actor_02, "adaptation"].eq("adapted (8 clips)").all()  # the stderr line's wording
    assert said.loc[~actor_02, "adaptation"].eq("plain (3 clips, fewer than 4)").all()
    assert said.loc[actor_02, "speaker"].eq("02").all() and said.loc[~actor_02, "speaker"].eq("03").all()
    assert not np.allclose(before[actor_02].to_numpy(), after[actor_02].to_numpy())
    assert np.allclose(before[~actor_02].to_numpy(), after[~actor_02].to_numpy(), atol=1e-6)  # CSV rounding
    lowered = runner.invoke(app, [*args, "--speaker-min-clips", "2", "--json", str(tmp_path / "low.json")])
    assert "speaker 03: adapted (3 clips)" in lowered.stderr
    files = json.loads((tmp_path / "low.json").read_text())["files"]
    got = {(f["speaker"], f["adaptation"]) for f in files}
    assert got == {("02", "adapted (8 clips)"), ("03", "adapted (3 clips)")} and len(files) == 11
    old = runner.invoke(
        app, ["predict", str(two_speakers), "--model", f"models:/{MODEL_NAME}/1", "--speaker-from", "folder"]
    )
    assert old.exit_code == 1 and isinstance(old.exception, SerError)
    assert str(old.exception).startswith(f"models:/{MODEL_NAME}/1: no training statistics recorded with it")
    assert "\n" not in str(old.exception)  # one line


def test_predict_batch_flow_adapts_by_folder(adapting_store, two_speakers, tmp_path, prefect_harness):
    from flows.predict_batch import predict_batch

    project = ROOT  # its params.yaml; MLFLOW_TRACKING_URI (the test's store) overrides its store
    result = predict_batch(
        input_dir=str(two_speakers),
        output_dir=str(tmp_path / "out"),
        project_dir=str(project),
        speaker_from="folder",
        speaker_min_clips=20,
    )
    assert result["speakers"] == [f"speaker {two_speakers}: plain (11 clips, fewer than 20)"]
    result = predict_batch(
        input_dir=str(two_speakers),
        output_dir=str(tmp_path / "out2"),
        project_dir=str(project),
        speaker_pattern=PATTERN,
    )
    assert result["speakers"] == [
        "speaker 02: adapted (8 clips)",
        "speaker 03: plain (3 clips, fewer than 4)",
    ]
    assert result["n_predicted"] == 11
    table = pd.read_csv(result["csv"], dtype={"speaker": str})
    assert table["label"].notna().all()
    got = table.groupby("speaker")["adaptation"].unique().map(list).to_dict()
    assert got == {"02": ["adapted (8 clips)"], "03": ["plain (3 clips, fewer than 4)"]}


def test_web_demo_adapts_to_more_clips_of_the_same_speaker(
    adapting_store, two_speakers, tmp_path, monkeypatch
):
    """The demo page (Streamlit's AppTest, in-process): an upload plus other clips of its speaker is
    scored as ``ser predict --speaker-pattern`` scores that speaker; too few clips, the plain model."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    clips = sorted(two_speakers.glob("*02.wav"))  # actor 02: 8 clips
    csv = {}
    for how, extra in (("plain", []), ("adapted", ["--speaker-pattern", PATTERN])):
        out = tmp_path / f"{how}.csv"
        done = CliRunner().invoke(app, ["predict", *map(str, clips), "--csv", str(out), *extra])
        assert done.exit_code == 0, done.output
        csv[how] = pd.read_csv(out).set_index("file").loc[str(clips[0])]
    shown = {how: f"{row.confidence:.1%}" for how, row in csv.items()}
    assert shown["plain"] != shown["adapted"]  # the page's caption can tell them apart

    def upload(page: AppTest, others: list[Path]) -> tuple[str, list[str]]:
        page.file_uploader[1].set_value([(p.name, p.read_bytes(), "audio/wav") for p in others])
        page.file_uploader[0].set_value((clips[0].name, clips[0].read_bytes(), "audio/wav")).run()
        assert not page.exception and not page.error, [e.value for e in page.error]
        return page.subheader[0].value, [c.value for c in page.caption]

    st.cache_resource.clear()  # the page caches its model per URI: another test's store may be cached
    monkeypatch.chdir(ROOT)  # params.yaml: the model name and the silence settings
    try:
        page = AppTest.from_file(str(ROOT / "app" / "demo.py"), default_timeout=120).run()
        assert page.file_uploader[1].accept_multiple_files
        heading, captions = upload(page, clips[1:])
        assert heading == f"Predicted emotion: {csv['adapted'].label}"
        assert "speaker adaptation: adapted (8 clips)" in captions
        assert any(c.startswith(f"confidence {shown['adapted']} ") for c in captions)
        heading, captions = upload(page, clips[1:3])
        assert heading == f"Predicted emotion: {csv['plain'].label}"
        assert "speaker adaptation: plain (3 clips, fewer than 4)" in captions
        assert any(c.startswith(f"confidence {shown['plain']} ") for c in captions)
        page.sidebar.text_input[0].set_value(f"models:/{MODEL_NAME}/1").run()  # published before adaptation
        assert len(page.file_uploader) == 1 and not page.error
        assert any("Speaker adaptation: not available" in c.value for c in page.caption)
    finally:
        st.cache_resource.clear()


def test_evaluate_scores_with_speaker_adaptation(demo_features):
    """``ser evaluate --speaker-adapt``: each test actor re-centred; too few clips scores as plain."""
    from components.evaluation.dataset import load_dataset
    from components.evaluation.evaluate import ModelSpec, evaluate_splits
    from components.evaluation.protocols import actor_kfold

    data = load_dataset(demo_features / "data" / "features", ["handmade"], False)
    spec = ModelSpec("logreg", "logreg", {}, ("handmade",))
    splits = actor_kfold(data.labels, n_folds=2, n_val_actors=0)

    def predictions(adapt: int | None) -> list:
        result = evaluate_splits(spec, data, splits, "actor-kfold", "all", adapt_min_clips=adapt)
        return [fold.predictions for fold in result.folds]

    plain = predictions(None)
    assert [p.equals(q) for p, q in zip(predictions(10_000), plain, strict=True)] == [True, True]
    assert not all(p.equals(q) for p, q in zip(predictions(4), plain, strict=True))
