"""MLflow lineage: runs always end, the data version is the dataset digest, every version has a card.

A real MLflow store (a copy of the migrated template per test), a tiny in-memory corpus with
RAVDESS's labels, and the real evaluation, publishing and registry code.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from components.evaluation.dataset import Dataset
from components.evaluation.evaluate import ModelSpec, evaluate_splits, pooled_predictions
from components.evaluation.metrics import normalize_confusion, plot_confusion
from components.evaluation.protocols import actor_kfold
from components.registry.model_card import (
    CARD_ARTIFACT,
    SECTIONS,
    CardFacts,
    card_description,
    corpus_tags,
    recorded_columns,
    render_card,
)
from components.registry.promote import CHAMPION
from components.registry.publish import publish
from components.tracking import runs
from components.tracking.runs import (
    END_REASON_TAG,
    dataset_digest,
    log_evaluation,
    log_training_data,
    raw_data_version,
    tracked_run,
)
from tests.conftest import ROOT

REGISTRY = "ravdess-emotion"


def tiny_corpus(n_actors: int = 4, seed: int = 0) -> Dataset:
    """Every speech and song clip of ``n_actors`` actors (RAVDESS's label grid), learnable stats."""
    rng = np.random.default_rng(seed)
    rows = []
    for actor, channel, emotion, intensity, statement, repetition in itertools.product(
        range(1, n_actors + 1), (1, 2), range(1, 9), (1, 2), (1, 2), (1, 2)
    ):
        if (emotion == 1 and intensity == 2) or (channel == 2 and emotion > 6):
            continue
        clip_id = (
            f"03-{channel:02d}-{emotion:02d}-{intensity:02d}-{statement:02d}-{repetition:02d}-{actor:02d}"
        )
        rows.append(
            {
                "clip_id": clip_id,
                "content_hash": f"h{len(rows)}",
                "actor": actor,
                "emotion": emotion,
                "vocal_channel": channel,
                "intensity": intensity,
                "statement": statement,
                "repetition": repetition,
                "gender": "female" if actor % 2 == 0 else "male",
            }
        )
    labels = pd.DataFrame(rows)
    centres = rng.normal(0, 1.0, (9, 6))
    stats = centres[labels["emotion"]] + rng.normal(0, 1.0, (len(labels), 6))
    logmel = rng.normal(0, 1.0, (len(labels), 8, 12)) + labels["emotion"].to_numpy()[:, None, None] / 4
    return Dataset(labels, {"handmade": stats.astype(np.float32)}, logmel.astype(np.float32))


@pytest.fixture
def client(mlflow_store) -> MlflowClient:
    return MlflowClient(mlflow_store)


@pytest.fixture
def experiment(client) -> str:
    return client.create_experiment("lineage")


def test_a_run_that_raises_ends_failed_with_the_reason_as_a_tag(client, experiment):
    with (
        pytest.raises(ValueError, match="bad feature table"),
        tracked_run(client, experiment, "train") as run,
    ):
        raise ValueError("bad feature table")
    ended = client.get_run(run)
    assert ended.info.status == "FAILED"
    assert ended.data.tags[END_REASON_TAG] == "ValueError: bad feature table"


def test_ctrl_c_ends_the_run_killed(client, experiment):
    with pytest.raises(KeyboardInterrupt), tracked_run(client, experiment, "train") as run:
        raise KeyboardInterrupt
    assert client.get_run(run).info.status == "KILLED"
    assert client.get_run(run).data.tags[END_REASON_TAG] == "KeyboardInterrupt"


def test_a_killed_process_leaves_no_running_run_once_rerun(client, experiment, mlflow_store):
    """kill -9 inside a run (no clean-up can run), then a new run: the old one ends KILLED with a reason."""
    code = (
        "import os, signal, sys; from mlflow import MlflowClient;"
        "from components.tracking.runs import tracked_run;"
        f"client = MlflowClient({mlflow_store!r});"
        f"cm = tracked_run(client, {experiment!r}, 'train'); run = cm.__enter__();"
        "inner = tracked_run(client, {experiment!r}, 'rf/fold-1', parent=run); child = inner.__enter__();"
        "print(run, child, flush=True); os.kill(os.getpid(), signal.SIGKILL)"
    ).replace("{experiment!r}", repr(experiment))
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, env=os.environ
    )
    assert done.returncode == -9, done.stderr
    killed, child = done.stdout.split()
    assert client.get_run(killed).info.status == "RUNNING"  # what a kill -9 leaves behind

    with tracked_run(client, experiment, "train") as rerun:
        pass
    for run in (killed, child):
        ended = client.get_run(run)
        assert ended.info.status == "KILLED"
        assert "ended without closing the run" in ended.data.tags[END_REASON_TAG]
    assert client.get_run(rerun).info.status == "FINISHED"


def test_a_run_of_a_live_process_is_left_alone(client, experiment):
    with tracked_run(client, experiment, "train") as outer, tracked_run(client, experiment, "retrain"):
        assert client.get_run(outer).info.status == "RUNNING"  # same process, still alive
    assert client.get_run(outer).info.status == "FINISHED"


def test_the_training_clips_dataset_digest_is_the_dvc_hash_of_the_data(client, experiment, tmp_path):
    md5 = "0123456789abcdef0123456789abcdef"
    lock = tmp_path / "dvc.lock"
    lock.write_text(
        f"schema: '2.0'\nstages:\n  ingest:\n    outs:\n    - path: data/raw\n      md5: {md5}.dir\n"
    )
    version = raw_data_version(lock)
    assert version == f"dvc:{md5}.dir"
    clips = tiny_corpus(1).labels
    with tracked_run(client, experiment, "refit/logreg") as run:
        log_training_data(client, run, clips, version)
    (dataset_input,) = client.get_run(run).inputs.dataset_inputs
    assert dataset_input.dataset.digest == md5 == dataset_digest(version)
    assert dataset_input.dataset.name == "training-clips"
    tags = {tag.key: tag.value for tag in dataset_input.tags}
    assert tags == {"mlflow.data.context": "training", "data_version": version}
    assert f'"num_rows": {len(clips)}' in dataset_input.dataset.profile
    assert dataset_digest("clips:0123456789abcdef") == "0123456789abcdef"


def test_normalised_confusion_rows_sum_to_one():
    counts = np.array([[5, 1, 0], [2, 2, 4], [0, 0, 0]])
    shares = normalize_confusion(counts)
    assert np.allclose(shares.sum(axis=1), [1.0, 1.0, 0.0])  # a class with no clips stays all 0
    assert shares[1].tolist() == [0.25, 0.25, 0.5]
    figure = plot_confusion(counts, ["neutral", "calm", "happy"], "t", normalized=True)
    cells = {text.get_text() for text in figure.axes[0].texts}
    assert {"0.83", "0.50"} <= cells and "5" not in cells  # shares, not counts


def evaluate_logreg(data: Dataset):
    spec = ModelSpec("logreg", "logreg", {"C": 1.0}, ("handmade",))
    splits = actor_kfold(data.labels, n_folds=2, n_val_actors=1)
    return spec, evaluate_splits(spec, data, splits, "actor-kfold", "all")


def test_learning_curves_are_logged_per_epoch_on_each_fold_run(client, experiment):
    data = tiny_corpus(3)
    spec = ModelSpec("cnn", "cnn", {"n_filters": 4, "epochs": 3, "patience": 10, "batch_size": 32}, ())
    result = evaluate_splits(
        spec, data, actor_kfold(data.labels, n_folds=3, n_val_actors=1), "actor-kfold", "all"
    )
    assert all(len(fold.history["train_loss"]) == 3 for fold in result.folds)  # recorded in the worker
    with tracked_run(client, experiment, "train") as parent:
        model_run = log_evaluation(client, experiment, parent, spec, result, {"data_version": "clips:x"})
    folds = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{model_run}'")
    assert len(folds) == 3
    for fold_run in folds:
        curve = client.get_metric_history(fold_run.info.run_id, "epoch_train_loss")
        assert [m.step for m in sorted(curve, key=lambda m: m.step)] == [1, 2, 3]
        assert fold_run.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(model_run)}
    assert {"learning_curves.png", "confusion_matrix_normalized.png", "recall_per_class.png"} <= artifacts


def test_every_registered_version_carries_its_model_card(client, experiment):
    import mlflow
    import mlflow.sklearn
    from sklearn.dummy import DummyClassifier

    data = tiny_corpus(4)
    _, best = evaluate_logreg(data)
    predictions = pooled_predictions(best)
    assert len(predictions) == len(data)  # two folds test every clip once
    clips = data.labels.assign(audio_dur=np.linspace(2.9, 4.1, len(data)))
    facts = CardFacts({"sampling_rate": 16000, "clip_dur": 2.39}, clips, "demo")
    tags = {"model_kind": "logreg", "model_name": "logreg", "data_version": "dvc:0123456789abcdef.dir"}

    def log_model() -> str:
        model = DummyClassifier().fit(np.zeros((4, 1)), [1, 2, 3, 4])
        return mlflow.sklearn.log_model(model, name="model", pip_requirements=[]).model_uri

    with tracked_run(client, experiment, "train") as parent:
        first = publish(client, REGISTRY, experiment, parent, best, "uar", tags, log_model, {}, facts)
        second = publish(client, REGISTRY, experiment, parent, best, "uar", tags, log_model, {}, facts)
    assert first.promoted and not second.promoted
    for decision in (first, second):
        version = client.get_model_version(REGISTRY, decision.version)
        card = version.description
        artifact = mlflow.artifacts.load_text(f"runs:/{version.run_id}/{CARD_ARTIFACT}")
        assert artifact == card
        assert [line[3:] for line in card.splitlines() if line.startswith("## ")] == list(SECTIONS)
        assert decision.reason in card
        assert "CC BY-NC-SA 4.0" in card and "non-commercial" in card
        assert "Clip lengths seen in training: 2.90-4.10 s" in card
        uar = best.summary["uar_mean"]
        assert f"| uar         | {uar:.3f} | {best.summary['uar_sd']:.3f} |" in card
        for group in ("female", "male", "strong", "Dogs are sitting by the door", "song"):
            assert f"| {group}" in card
        assert "| 7    | disgust" in card or "|    7 | disgust" in card
        assert "| clip_dur      | 2.39" in card
        assert client.get_run(version.run_id).info.status == "FINISHED"
        # what trained it and what it predicts, on the version and on its refit run
        recorded = {"ser.corpora": "ravdess", "ser.label_set": ",".join(best.summary["class_names"])}
        assert len(best.summary["class_names"]) == 8
        assert {k: version.tags[k] for k in recorded} == recorded
        assert {k: client.get_run(version.run_id).data.tags[k] for k in recorded} == recorded
    assert "registered, **not** promoted" in client.get_model_version(REGISTRY, second.version).description
    assert str(client.get_model_version_by_alias(REGISTRY, CHAMPION).version) == first.version


def test_the_card_names_each_training_corpus_with_its_licence_from_the_one_table():
    from components.data.corpora.licences import LICENCES
    from components.registry.promote import Decision

    data = tiny_corpus(4)
    _, best = evaluate_logreg(data)
    corpora = np.where(data.labels["actor"] <= 2, "emodb", "ravdess")
    facts = CardFacts({}, data.labels.assign(corpus=corpora), "emodb+ravdess")
    tags = {"model_name": "logreg", "model_kind": "logreg", "data_version": "clips:x"}
    tags |= corpus_tags(best, facts)
    assert tags["ser.corpora"] == "emodb,ravdess"
    card = render_card(REGISTRY, "3", tags, best, Decision("3", True, "first"), facts)
    n_emodb = int((corpora == "emodb").sum())
    assert f"- Corpora: EmoDB ({n_emodb} clips), RAVDESS ({len(data) - n_emodb} clips)." in card
    for name in ("emodb", "ravdess"):
        assert f"{LICENCES[name].licence}." in card  # read from the table, not written in the card
    assert "emodb.bilderbar.info" in card and "CC BY-NC-SA 4.0" in card
    assert "acted German speech" in card and "North American actors: two fixed" not in card
    assert "ODbL" not in card  # only the corpora that trained it
    alone = render_card(REGISTRY, "4", tags, best, Decision("4", True, "first"), CardFacts())
    assert "RAVDESS emotion codes" in alone and "EmoDB" not in alone  # no corpus column: RAVDESS


def test_recorded_columns_read_lengths_and_corpus_from_the_clips_table(tmp_path):
    table = tmp_path / "clips.parquet"
    assert recorded_columns(table, pd.Series(["a"])) == {}  # no table yet
    clips = {"clip_id": ["a", "b"], "audio_dur": [3.5, 4.0], "corpus": ["emodb", None]}
    pd.DataFrame(clips).to_parquet(table)
    found = recorded_columns(table, pd.Series(["b", "a", "c"]))
    assert found["audio_dur"].to_dict() == {"b": 4.0, "a": 3.5}
    assert found["corpus"].to_dict() == {"a": "emodb"}  # unknown ones left out
    pd.DataFrame({"clip_id": ["a"], "audio_dur": [3.5]}).to_parquet(table)
    assert set(recorded_columns(table, pd.Series(["a"]))) == {"audio_dur"}  # no corpus column


def test_a_card_too_long_for_the_registry_is_cut_at_a_line_and_says_where_the_rest_is():
    card = "# title\n\n" + "\n".join(f"- line {i}" for i in range(2000))
    description = card_description(card)
    assert len(description) <= 5000 < len(card)
    assert description.endswith(f"the whole card is the run's artifact `{CARD_ARTIFACT}`)\n")
    assert description.splitlines()[-3].startswith("- line ")  # cut between lines
    assert card_description("short") == "short"


def test_group_breakdown_is_computed_from_pooled_predictions():
    from components.evaluation.metrics import group_metrics

    data = tiny_corpus(4)
    _, best = evaluate_logreg(data)
    predictions = pooled_predictions(best)
    rows = {row["group"]: row for row in group_metrics(predictions, "gender", best.summary["classes"])}
    female = predictions[predictions["gender"] == "female"]
    assert rows["female"]["n"] == len(female)
    assert rows["female"]["accuracy"] == pytest.approx((female["true"] == female["pred"]).mean())


def test_system_metrics_are_a_switch(client, experiment, monkeypatch):
    import time

    from components.settings import Tracking

    assert Tracking().system_metrics is False
    monkeypatch.setattr(runs, "SYSTEM_METRICS_INTERVAL_S", 0.2)
    with tracked_run(client, experiment, "train", system_metrics=True) as on:
        time.sleep(1.0)
    with tracked_run(client, experiment, "train") as off:
        pass
    assert any(key.startswith("system/") for key in client.get_run(on).data.metrics)
    assert not any(key.startswith("system/") for key in client.get_run(off).data.metrics)
