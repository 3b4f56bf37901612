"""The workspace lock: a second run refuses (or waits) with a one-line message; a killed run leaves none."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from components.errors import SerError
from components.runtime.locks import hold_lock, lock_file
from tests.conftest import ROOT

HOLDER = """
import sys, time
from components.runtime.locks import hold_lock
with hold_lock(sys.argv[1], "featurize"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def holder(tmp_path) -> Iterator:
    """Start another process holding the lock on a path for some seconds; yields the starter."""
    started = []

    def start(path, seconds: float = 60.0) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path), str(seconds)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_a_second_run_refuses_at_once_naming_the_first(tmp_path, holder, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = holder(tmp_path / "data" / "features")
    started = time.monotonic()
    with pytest.raises(SerError) as err, hold_lock(tmp_path / "data" / "features", "featurize"):
        pass
    assert time.monotonic() - started < 1.0
    message = str(err.value)
    assert re.fullmatch(
        rf"another run \(featurize, pid {first.pid}, started \d\d:\d\d:\d\d\) is writing data/features; "
        "wait for it to finish or stop it",
        message,
    ), message
    assert "\n" not in message


def test_waiting_runs_take_the_lock_when_it_is_released_or_give_up(tmp_path, holder):
    target = tmp_path / "metrics" / "train.json"
    holder(target, seconds=1.0)
    started = time.monotonic()
    with hold_lock(target, "train", wait_s=30):  # the first ends after 1 s
        waited = time.monotonic() - started
        assert 0.3 < waited < 10
    holder(target, seconds=60)
    started = time.monotonic()
    with (
        pytest.raises(SerError, match=r"\(waited 0.5 s\); wait for it to finish"),
        hold_lock(target, "train", wait_s=0.5),
    ):
        pass
    assert 0.4 < time.monotonic() - started < 5


def test_a_killed_holder_leaves_no_stale_lock(tmp_path, holder):
    target = tmp_path / "features"
    first = holder(target)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert lock_file(target).exists()  # the file stays behind, its flock died with the process
    with hold_lock(target, "featurize"):  # taken at once
        assert str(os.getpid()) in lock_file(target).read_text()


def test_the_lock_is_reentrant_and_its_file_goes_away(tmp_path):
    target = tmp_path / "features"
    with hold_lock(target, "featurize"), hold_lock(target, "featurize again"):
        assert lock_file(target) == tmp_path / ".features.lock"
        assert lock_file(target).exists()
    assert not lock_file(target).exists()
    assert not target.exists()  # nothing is written into the guarded output itself
    with hold_lock(target, "featurize"):  # free again
        pass


def test_registry_changes_wait_for_the_registry_lock_then_refuse(mlflow_store, holder, monkeypatch):
    from mlflow import MlflowClient

    import components.registry.promote as registry

    monkeypatch.setattr(registry, "REGISTRY_WAIT_S", 0.3)
    client = MlflowClient(mlflow_store)
    holder(registry.store_path(mlflow_store))  # a run publishing into the same store
    with pytest.raises(SerError, match=r"is writing .*mlflow\.db \(waited 0\.3 s\); wait for it"):
        registry.rollback(client, "ravdess-emotion")


def test_publishing_registers_and_promotes_under_one_registry_lock(mlflow_store, monkeypatch):
    from types import SimpleNamespace

    from mlflow import MlflowClient

    import components.registry.publish as publishing
    from components.registry.promote import Decision, store_path

    client = MlflowClient(mlflow_store)
    lock, calls = lock_file(store_path(mlflow_store)), []

    def register(client, name, model_uri, run_id, tags):
        calls.append(("register", lock.exists(), tags))
        return "7"

    def promote_if_better(client, name, version, score, comparable, fresh_scores):
        calls.append(("promote", lock.exists(), comparable))
        return Decision(version, True, "test")

    monkeypatch.setattr(publishing, "register", register)
    monkeypatch.setattr(publishing, "promote_if_better", promote_if_better)
    monkeypatch.setattr(publishing, "render_card", lambda *args: "card")  # the card has its own tests
    monkeypatch.setattr(
        client,
        "update_model_version",
        lambda name, version, description: calls.append(("describe", lock.exists(), description)),
    )
    experiment = client.create_experiment("publish")
    folds = [SimpleNamespace()] * 3
    summary = {"uar_mean": 0.5, "class_names": ["neutral", "angry"]}
    best = SimpleNamespace(summary=summary, protocol="holdout", subset="all", folds=folds)
    model = {"model_kind": "svm", "model_name": "svm", "data_version": "v1", "pretrained": "x"}
    decision = publishing.publish(
        client, "m", experiment, "parent", best, "uar", model, lambda: "runs:/r/model", {}
    )
    assert decision == Decision("7", True, "test")
    # registered, promoted and described (the model card names the decision) under one lock
    assert [(step, held) for step, held, _ in calls] == [
        ("register", True),
        ("promote", True),
        ("describe", True),
    ]
    tags = calls[0][2]
    assert tags["primary_metric_value"] == "0.500000" and tags["pretrained"] == "x"
    assert (tags["ser.corpora"], tags["ser.label_set"]) == ("ravdess", "neutral,angry")  # no clips: RAVDESS
    comparable = {"data_version": "v1", "protocol": "holdout", "subset": "all", "primary_metric": "uar"}
    comparable["n_folds"] = "3"  # a 3-fold score is not compared with a 6-fold one as the same measurement
    comparable |= {"ser.corpora": "ravdess", "ser.label_set": "neutral,angry"}  # nor other corpora or labels
    assert calls[1][2] == comparable
    assert not lock.exists()  # released once published
