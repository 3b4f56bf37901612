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

from tests.conftest import ROOT

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
    """The project's tracked files in a fresh git repository, set to a 3-actor demo corpus."""
    target = tmp_path_factory.mktemp("clone")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in files.splitlines():
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    for name in ("flows", "components"):  # the working tree's code, committed or not
        shutil.copytree(
            ROOT / name, target / name, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
        )
    params = yaml.safe_load((target / "params.yaml").read_text())
    params["ingest"]["demo_actors"] = 3
    params["featurize"]["feature_sets"] = ["handmade", "logmel", "waveform"]
    params["train"]["models"] = ["rf", "logreg"]
    params["evaluate"].update(runs=[{"protocol": "actor-kfold", "subset": "all"}], n_folds=3, n_val_actors=1)
    params["rf"]["n_estimators"] = 50
    params["logreg"]["features"] = ["handmade"]
    params["wav2vec2"]["local_only"] = True  # no weights here: the stage records a skip and dvc goes on
    (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (target / "dvc.lock").unlink(missing_ok=True)
    shutil.copy(mlflow_template, target / "mlflow" / "mlflow.db")  # skip the store's migrations
    run(["git", "init", "-q"], target)
    return target


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
    from components import synth_voice
    from flows.ingest import source_settings

    params = {"source": "demo", "demo_actors": 8, "demo_seed": 0, "max_extract_bytes": 1}
    before = source_settings(params)
    edited = tmp_path / "synth_voice.py"
    edited.write_text(Path(synth_voice.__file__).read_text() + "\n# changed\n")
    monkeypatch.setattr(synth_voice, "__file__", str(edited))
    assert source_settings(params) != before
    assert "synth_code" not in source_settings({**params, "source": "/some/folder"})
