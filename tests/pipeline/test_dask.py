"""orchestration.task_runner: Dask writes the same feature tables as local processes; train's runner."""

from __future__ import annotations

import copy

import pytest
import yaml
from pydantic import ValidationError

from components.data.discover import discover
from components.data.metadata import build_metadata
from components.data.synth import write_corpus
from components.runtime.runners import n_workers
from components.settings import Settings
from flows.featurize import extract_features
from flows.train import task_runner
from tests.conftest import ROOT

SETTINGS = yaml.safe_load((ROOT / "params.yaml").read_text())
SETS = ["handmade", "logmel"]  # the quick sets: what matters here is the runner, not the extractors


def with_runner(runner: str, **extra) -> Settings:
    settings = copy.deepcopy(SETTINGS)
    settings["orchestration"] = {**settings["orchestration"], "task_runner": runner, **extra}
    return Settings.model_validate(settings)


def test_dask_featurize_writes_the_same_tables_as_local_processes(tmp_path):
    write_corpus(tmp_path / "corpus", actors=[1], sampling_rate=16_000, n_jobs=1)
    clips, _ = build_metadata(discover(tmp_path / "corpus"), silence_dbfs=-60.0)
    local = extract_features(clips, tmp_path / "process", with_runner("process"), SETS, n_jobs=2)
    dask = extract_features(clips, tmp_path / "dask", with_runner("dask", dask_workers=2), SETS)
    assert local["n_clips"] == dask["n_clips"] == len(clips) > 50
    assert local["sets"] == dask["sets"]
    for name in SETS:
        assert (tmp_path / "dask" / f"{name}.parquet").read_bytes() == (
            tmp_path / "process" / f"{name}.parquet"
        ).read_bytes(), name


def test_train_runs_on_the_runner_the_settings_name():
    from prefect.task_runners import ProcessPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    assert isinstance(task_runner(Settings.model_validate(SETTINGS)), ProcessPoolTaskRunner)  # the default
    local = task_runner(with_runner("dask", dask_workers=3))
    assert isinstance(local, DaskTaskRunner)
    assert local.cluster_kwargs["n_workers"] == 3 and local.cluster_kwargs["threads_per_worker"] == 1
    assert n_workers(with_runner("dask", dask_workers=3).orchestration, train_workers=2) == 3
    assert n_workers(with_runner("process").orchestration, train_workers=2) == 2
    remote = task_runner(with_runner("dask", dask_address="tcp://scheduler:8786"))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://scheduler:8786"
    with pytest.raises(ValidationError, match=r"orchestration\.task_runner"):  # refused when read
        with_runner("ray")
