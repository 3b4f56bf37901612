"""Every experiment config smoke-runs through the harness on a tiny corpus (lightning-hydra's
``experiment=glob(*)``): MLflow runs and a stamped report, scored on validation actors only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from components.evaluation.protocols import actor_kfold
from components.features.featurize import featurize
from components.features.sets import extract_params
from components.settings import load_params
from experiments.run import load_config, main, model_spec
from tests.conftest import ROOT

CONFIGS = sorted((ROOT / "experiments" / "configs").glob("*.yaml"))


def specs(path: Path) -> list:
    params = load_params(ROOT / "params.yaml")
    config = load_config(path, params)
    return [model_spec(name, entry, params) for name, entry in config["configurations"].items()]


# a config of deep models trains for minutes even here: make test-all runs it
CASES = [
    pytest.param(
        path, id=path.stem, marks=[pytest.mark.slow] if any(s.uses_logmel for s in specs(path)) else []
    )
    for path in CONFIGS
]


def test_there_is_a_config_to_run():
    assert CONFIGS, "experiments/configs/ holds no config"


@pytest.fixture(scope="module")
def features(demo_features, tmp_path_factory) -> Path:
    """The demo corpus's tables, plus every set a config reads that the demo fixture lacks
    (extracted for a few clips of each actor and channel only: configurations reading it see those)."""
    params = load_params(ROOT / "params.yaml")
    needed = set()
    for path in CONFIGS:
        for spec in specs(path):
            needed |= {*spec.stats_sets, *([spec.sequence] if spec.uses_logmel else [])}
    out = tmp_path_factory.mktemp("experiment-features")
    for table in (demo_features / "data" / "features").glob("*.parquet"):
        shutil.copy(table, out / table.name)
    missing = sorted(name for name in needed if not (out / f"{name}.parquet").exists())
    if missing:
        clips = pd.read_parquet(demo_features / "data" / "metadata" / "clips.parquet")
        clips = clips.groupby(["actor", "vocal_channel"]).head(6)  # a smoke test: openSMILE is slow
        extract = extract_params(params["preprocess"], params["featurize"])
        featurize(clips, out, missing, extract, n_jobs=2, progress=False)
    return out


@pytest.mark.parametrize("config", CASES)
def test_config_runs_on_validation_actors_and_logs_to_mlflow(config, features, mlflow_store, tmp_path):
    params = load_params(ROOT / "params.yaml")
    params["evaluate"].update(n_folds=2, n_val_actors=1)  # 4 actors: 2 test, 1 validation, 1 training
    params["tracking"]["artifact_location"] = str(tmp_path / "artifacts")
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    reports = tmp_path / "reports"

    options = ["--features", str(features), "--params", str(params_file), "--reports", str(reports)]
    main([str(config), *options, "--workers", "2"])  # in worker processes, as a real run

    summary = json.loads((reports / f"{config.stem}.json").read_text())
    text = (reports / f"{config.stem}.md").read_text()
    assert "> Produced at commit" in text and "python -m experiments" in text
    client = MlflowClient(mlflow_store)
    experiment = client.get_experiment_by_name(f"{params['tracking']['experiment']}-experiments")
    runs = client.search_runs([experiment.experiment_id])
    parent = client.get_run(summary["parent_run_id"])
    assert parent.info.run_name == config.stem
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(summary["rows"]) > 0
    # the scored actors are each fold's validation actors, never one of its test actors
    labels = pd.read_parquet(features / "handmade.parquet", columns=["actor"])
    folds = actor_kfold(labels, n_folds=2, n_val_actors=1)
    test_of = {f"{split.name}-val": set(split.test_actors) for split in folds}
    val_of = {f"{split.name}-val": set(split.val_actors) for split in folds}
    fold_runs = [r for r in runs if "fold" in r.data.tags]
    assert len(fold_runs) == 2 * len(children)
    for run in fold_runs:
        scored = {int(a) for a in run.data.params["test_actors"].split(",")}
        assert scored == val_of[run.data.tags["fold"]] and not scored & test_of[run.data.tags["fold"]]
    for record in summary["folds"].values():
        for fold in record:
            left_out = set(fold["test_actors_left_out"])
            assert left_out and not left_out & (set(fold["val_actors_scored"]) | set(fold["train_actors"]))
