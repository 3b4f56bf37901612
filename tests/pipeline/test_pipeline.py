"""End to end: `dvc repro` in a temporary clone, on a tiny demo corpus, offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT, make_clone

BIN = Path(sys.executable).parent
N_CLIPS = 3 * (60 + 44)


def run(cmd: list[str], cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_API"))}
    env["PATH"] = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def clone(tmp_path_factory, mlflow_template) -> Path:
    """The project in a fresh git repository, set to a 3-actor demo corpus."""
    return make_clone(tmp_path_factory.mktemp("clone"), mlflow_template)


def stages_run(log: str) -> list[str]:
    return [line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage")]


def test_dvc_repro_builds_validates_and_featurizes_then_skips(clone):
    first = run(["dvc", "repro"], clone)
    ran = stages_run(first)
    assert ran[:3] == ["ingest", "validate", "featurize"] and set(ran[3:]) == {"train", "wav2vec2"}
    raw = sorted(p.relative_to(clone / "data/raw").as_posix() for p in (clone / "data/raw").rglob("*.wav"))
    assert len(raw) == N_CLIPS
    clips = pd.read_parquet(clone / "data/metadata/clips.parquet")
    assert len(clips) == N_CLIPS and set(clips["actor"]) == {1, 2, 3}
    for name in ("handmade", "logmel", "waveform"):
        assert len(pd.read_parquet(clone / f"data/features/{name}.parquet", columns=["clip_id"])) == N_CLIPS
    train = json.loads((clone / "metrics/train.json").read_text())
    assert {row["model"] for row in train["results"]} == {"rf", "logreg"}
    assert train["registry"]["promoted"] is True
    skipped = json.loads((clone / "metrics/wav2vec2.json").read_text())["status"]
    assert skipped.startswith("skipped: pretrained weights for facebook/wav2vec2-base")
    assert "not available offline" in skipped
    assert "Traceback" not in first
    shown = run(["dvc", "metrics", "show"], clone)
    assert "metrics/train.json" in shown and "metrics/validate.json" in shown
    assert (clone / "reports/validation/index.html").exists()
    assert json.loads((clone / "metrics/validate.json").read_text())["n_rejected"] == 0

    second = run(["dvc", "repro"], clone)
    assert stages_run(second) == ["ingest"]  # always runs, returns at once
    assert "nothing to do" in second
    assert "didn't change, skipping" in second


def test_changing_a_featurize_param_reruns_only_featurize(clone):
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["featurize"]["n_mfcc"] = 20
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = run(["dvc", "repro"], clone)
    ran = stages_run(log)
    assert ran[:2] == ["ingest", "featurize"] and set(ran[2:]) == {"train", "wav2vec2"}
    metrics = json.loads((clone / "metrics/featurize.json").read_text())
    assert metrics["sets"]["handmade"]["n_extracted"] == N_CLIPS
    assert metrics["sets"]["logmel"]["n_reused"] == N_CLIPS  # n_mfcc does not touch log-mels


def test_demo_fingerprint_follows_the_synthesiser_code(monkeypatch, tmp_path):
    from components.data import synth_voice
    from components.settings import Ingest
    from flows.ingest import source_settings

    settings = Ingest(source="demo", demo_actors=8, demo_seed=0, max_extract_bytes=1)
    before = source_settings(settings)
    edited = tmp_path / "synth_voice.py"
    edited.write_text(Path(synth_voice.__file__).read_text() + "\n# changed\n")
    monkeypatch.setattr(synth_voice, "__file__", str(edited))
    assert source_settings(settings) != before
    assert "synth_code" not in source_settings(settings.model_copy(update={"source": "/some/folder"}))


@pytest.fixture
def own_store(monkeypatch):
    """Flows below read the clone's store; forget the global URI MLflow keeps after loading a model."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield
    mlflow.set_tracking_uri(None)  # it also sets the variable, which later tests must not inherit


def versions(clone: Path) -> list[str]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{clone / 'mlflow' / 'mlflow.db'}")
    return [
        str(n) for n in sorted(int(v.version) for v in client.search_model_versions("name='ravdess-emotion'"))
    ]


def latest_artifact(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert found, f"no artifact {key!r}"
    return max(found, key=lambda a: a.created).data


def test_retrain_flow_with_no_change_retrains_nothing(clone, prefect_harness, own_store):
    from flows.retrain import ARTIFACT_KEY, retrain

    before = versions(clone)
    state = retrain(project_dir=str(clone), return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["stages_run"] == []
    assert summary["stages_skipped"][:3] == ["ingest", "validate", "featurize"]
    assert "train" in summary["stages_skipped"] and "registry" not in summary
    assert summary["data_version"]["changed"] is False and summary["params_changed"] == []
    assert versions(clone) == before
    text = latest_artifact(ARTIFACT_KEY)
    assert "Nothing was retrained" in text and "**Stages re-run**: none" in text


def test_retrain_flow_runs_a_named_dvc_experiment_with_its_parameters(clone, prefect_harness, own_store):
    from flows.retrain import LINK_KEY, TABLE_KEY, retrain

    state = retrain(project_dir=str(clone), models=["logreg"], return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    name = summary["experiment"]
    assert name.startswith("retrain-") and summary["stages_run"] == ["train"]
    assert summary["params_changed"] == ['train.models: ["rf", "logreg"] → ["logreg"]']
    assert [row["model"] for row in summary["candidates"]] == ["logreg"]
    # the workspace keeps what the experiment set, as any workspace `dvc exp run -S` does
    assert yaml.safe_load((clone / "params.yaml").read_text())["train"]["models"] == ["logreg"]
    show = [str(BIN / "dvc"), "exp", "show", "--json"]
    shown = json.loads(subprocess.run(show, cwd=clone, capture_output=True, text=True, check=True).stdout)
    experiments = [exp for commit in shown for exp in (commit.get("experiments") or [])]
    found = [exp for exp in experiments if exp.get("name") == name]
    assert found, f"{name} not in dvc exp show"
    revision = found[0]["revs"][0]["data"]
    assert revision["params"]["params.yaml"]["data"]["train"]["models"] == ["logreg"]
    assert revision["metrics"]["metrics/train.json"]["data"]["best"]["model"] == "logreg"
    table = json.loads(latest_artifact(TABLE_KEY))
    assert [row["model"] for row in table] == ["logreg"]
    assert f"/versions/{summary['registry']['version']}" in latest_artifact(LINK_KEY)


def test_retrain_flow_refuses_while_another_holds_the_workspace(clone, prefect_harness, own_store):
    from flows.retrain import LOCK_TARGET, retrain

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom components.runtime.locks import hold_lock\n"
            f"with hold_lock({str(clone / LOCK_TARGET)!r}, 'retraining (test)'):\n"
            "    print('held', flush=True)\n    time.sleep(120)",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        state = retrain(project_dir=str(clone), wait_s=1.0, return_state=True)
    finally:
        holder.kill()
        holder.wait()
    assert state.is_failed()
    assert "retraining (test)" in state.message and "wait for it to finish" in state.message
    assert state.message.count("\n") == 0  # one line, no traceback


def test_predict_batch_flow_writes_a_csv_with_the_champion(clone, prefect_harness, own_store, tmp_path):
    from flows.predict_batch import predict_batch

    folder = clone / "data" / "raw" / "speech" / "Actor_02"
    (tmp_path / "broken.wav").write_bytes(b"not audio at all")
    shutil.copytree(folder, tmp_path / "in")
    shutil.copy(tmp_path / "broken.wav", tmp_path / "in" / "broken.wav")
    result = predict_batch(
        input_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"), project_dir=str(clone)
    )
    table = pd.read_csv(result["csv"])
    assert Path(result["csv"]).parent == tmp_path / "out"
    assert len(table) == 61 and result["n_predicted"] == 60 and result["n_failed"] == 1
    broken = table[table["file"].str.endswith("broken.wav")].iloc[0]
    assert pd.isna(broken["label"]) and "broken.wav" in broken["error"]
    assert (
        table["label"]
        .dropna()
        .isin(["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"])
        .all()
    )
    assert result["model"].startswith("ravdess-emotion v")


def test_evaluate_flow_scores_a_registered_version_and_logs_it(clone, prefect_harness, own_store):
    from mlflow import MlflowClient

    from components.errors import SerError
    from flows.evaluate import evaluate_version, pick_clips

    result = evaluate_version(
        source=str(clone / "data" / "raw"),
        protocol="holdout",
        subset="speech",
        test_actors=[3],
        project_dir=str(clone),
    )
    assert result["n_clips"] == 60 and result["n_failed"] == 0
    client = MlflowClient(f"sqlite:///{clone / 'mlflow' / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("ravdess-emotion", "champion").version  # the default model
    assert 0.0 <= result["accuracy"] <= 1.0 and result["model_version"] == str(champion)
    run = client.get_run(result["run_id"])
    assert run.data.metrics["accuracy"] == pytest.approx(result["accuracy"], abs=1e-4)
    assert run.data.tags["protocol"] == "holdout" and run.data.params["test_actors"] == "3"
    state = evaluate_version(
        source=str(clone / "data" / "raw"), protocol="actor-kfold", return_state=True, project_dir=str(clone)
    )
    # a typed parameter (a choice in the Prefect UI's form): refused before the flow runs
    assert state.is_failed() and "protocol: Input should be 'holdout' or 'all'" in state.message
    with pytest.raises(SerError, match="cross-validating a configuration is `ser evaluate`"):
        pick_clips([], "actor-kfold", "all", [3])  # and in one line where no form checked it
