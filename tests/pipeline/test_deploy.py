"""Deployments: one table renders prefect.yaml and what `make flows` serves; a real server runs retrain."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest
import yaml

from components.settings import Settings
from tests.conftest import ROOT, free_port, make_clone, serve_deployments, start_prefect_server, stop

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
PREFECT_YAML = yaml.safe_load((ROOT / "prefect.yaml").read_text())
FLOW_NAMES = {
    "retrain": "retrain",
    "evaluate": "evaluate",
    "predict-batch": "predict-batch",
    "wav2vec2-finetune": "wav2vec2",
}


def entry_flow(entrypoint: str):
    path, name = entrypoint.split(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)


def test_prefect_yaml_entrypoints_are_the_flows_and_take_their_parameters():
    from prefect import Flow

    deployments = {d["name"]: d for d in PREFECT_YAML["deployments"]}
    assert set(deployments) == set(FLOW_NAMES)
    for name, deployment in deployments.items():
        entry = entry_flow(deployment["entrypoint"])
        assert isinstance(entry, Flow) and entry.name == FLOW_NAMES[name]
        parameters = deployment.get("parameters") or {}
        assert parameters.items() <= entry.validate_parameters(parameters).items()
    assert deployments["retrain"]["concurrency_limit"] == 1


def test_the_committed_prefect_yaml_is_the_deployment_table_rendered():
    from flows.deploy import prefect_yaml

    rendered = prefect_yaml(Settings.model_validate(PARAMS))
    assert (ROOT / "prefect.yaml").read_text() == rendered, (
        "prefect.yaml differs from flows/deploy.py's table: run `python -m flows.deploy --write-prefect-yaml`"
    )
    changed = {**PARAMS, "retrain": {**PARAMS["retrain"], "schedule": None}}
    rendered = yaml.safe_load(prefect_yaml(Settings.model_validate(changed)))
    (retrain,) = [d for d in rendered["deployments"] if d["name"] == "retrain"]
    assert retrain["schedules"] == []  # on demand only


def test_make_flows_serves_the_prefect_yaml_deployments_but_the_gpu_one():
    from flows.deploy import build_deployments

    served = {d.name: d for d in build_deployments(Settings.model_validate(PARAMS))}
    pooled = {d["name"]: d for d in PREFECT_YAML["deployments"]}
    assert set(pooled) - set(served) == {"wav2vec2-finetune"} and set(served) <= set(pooled)
    for name, deployment in served.items():
        assert deployment.entrypoint.endswith(pooled[name]["entrypoint"])  # relative to the working folder
        assert deployment.flow_name == FLOW_NAMES[name]
        assert deployment.description == pooled[name]["description"]
        assert deployment.tags == pooled[name]["tags"]
        assert deployment.parameters == pooled[name]["parameters"]
        assert deployment.concurrency_limit == pooled[name].get("concurrency_limit")


def test_the_retrain_schedule_is_the_same_in_prefect_yaml_and_params():
    (schedule,) = next(d for d in PREFECT_YAML["deployments"] if d["name"] == "retrain")["schedules"]
    assert schedule["cron"] == PARAMS["retrain"]["schedule"]
    assert schedule["timezone"] == PARAMS["retrain"]["timezone"]


def test_served_deployments_follow_params():
    from flows.deploy import build_deployments

    settings = yaml.safe_load((ROOT / "params.yaml").read_text())
    built = {d.name: d for d in build_deployments(Settings.model_validate(settings))}
    assert set(built) == {"retrain", "evaluate", "predict-batch"}
    (schedule,) = built["retrain"].schedules
    assert schedule.schedule.cron == settings["retrain"]["schedule"]
    assert built["evaluate"].parameters == {"source": settings["ingest"]["source"]}

    settings["retrain"]["schedule"] = None  # on demand only
    assert not {d.name: d for d in build_deployments(Settings.model_validate(settings))}["retrain"].schedules


def test_serving_without_a_server_says_how_to_start_one():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_API_URL"] = f"http://127.0.0.1:{free_port()}/api"
    done = subprocess.run(
        [sys.executable, "-m", "flows.deploy"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: no Prefect server answers at http://127.0.0.1:")
    assert "make prefect-ui" in done.stderr and "Traceback" not in done.stderr


def test_overrides_set_only_what_changes_and_the_profiles_model_list():
    from components.errors import SerError
    from flows.retrain import describe_changes, overrides

    params = json.loads(json.dumps(PARAMS))
    params["train"]["profile"] = "full"
    assert overrides(params, None, None, None) == {}
    wanted = overrides(params, "/data/ravdess", ["svm", "rf"], "random")
    assert list(wanted) == ["ingest.source", "train.models", "evaluate.runs"]
    primary = {"protocol": "random", "subset": PARAMS["evaluate"]["runs"][0]["subset"]}
    assert wanted["evaluate.runs"][0] == primary
    assert len(wanted["evaluate.runs"]) == len({json.dumps(r) for r in wanted["evaluate.runs"]})
    changes = describe_changes(params, wanted)
    assert changes[0] == 'ingest.source: "demo" → "/data/ravdess"'
    assert changes[1].startswith("train.models: [") and changes[1].endswith('→ ["svm", "rf"]')
    params["train"]["profile"] = "quick"  # the models of the profile in effect
    assert list(overrides(params, None, ["svm", "rf"], None)) == ["train.quick.models"]
    full = overrides(params, None, ["svm", "rf"], None, profile="full")
    assert list(full) == ["train.profile", "train.models"]
    assert overrides(params, None, params["train"]["quick"]["models"], None) == {}  # nothing new
    with pytest.raises(SerError, match=r"no params\.yaml model section for nope"):
        overrides(params, None, ["svm", "nope"], None)


@pytest.mark.parametrize(
    "value",
    [
        "/data/rav dess",
        "it's\\here\\",
        "C:\\corpus\\'x'",
        ["svm", "rf"],
        [{"protocol": "random", "subset": "all"}, {"protocol": "actor-kfold", "subset": "speech"}],
        True,
        None,
        3,
        0.25,
    ],
)
def test_set_param_values_reach_params_yaml_unchanged_through_dvcs_parser(tmp_path, value):
    from dvc.utils.hydra import apply_overrides

    from flows.retrain import hydra_value

    params = tmp_path / "params.yaml"
    params.write_text("ingest:\n  source: demo  # a comment\n")
    apply_overrides(params, [f"ingest.source={hydra_value(value)}"])  # what dvc exp run -S calls
    assert yaml.safe_load(params.read_text())["ingest"]["source"] == value


def test_stages_whose_lock_entry_changed_count_as_run():
    from flows.retrain import changed_stages

    before = {"ingest": {"outs": [{"md5": "a"}]}, "validate": {"deps": [1]}, "train": {"params": {"x": 1}}}
    after = before | {"train": {"params": {"x": 2}}, "wav2vec2": {"outs": []}}
    order = ["ingest", "validate", "featurize", "train", "wav2vec2"]
    assert changed_stages(before, after, order) == (["train", "wav2vec2"], ["ingest", "validate"])
    assert changed_stages({}, {}, order) == ([], [])


def retrain_via_api(api_url: str, timeout_s: float = 1200) -> tuple[object, str]:
    """Trigger the served retrain deployment, wait for it, return the flow run and its summary artifact."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        run = run_deployment("retrain/retrain", timeout=timeout_s, poll_interval=2)
        with get_client(sync_client=True) as client:
            found = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
            )
    summary = [a for a in found if a.type == "markdown"]  # beside it: the candidates table, the version link
    return run, (summary[0].data if summary else "")


@pytest.mark.slow
def test_a_real_server_runs_retrain_cold_incremental_and_unchanged(tmp_path, mlflow_template):
    from mlflow import MlflowClient

    from components.data.synth import write_corpus

    source = tmp_path / "incoming"
    write_corpus(source, actors=[1, 2, 3], seed=0, n_jobs=2)
    project = make_clone(tmp_path / "project", mlflow_template)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["ingest"]["source"] = str(source)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    registry = MlflowClient(f"sqlite:///{project / 'mlflow' / 'mlflow.db'}")

    def versions() -> list[str]:
        return [
            str(n)
            for n in sorted(int(v.version) for v in registry.search_model_versions("name='ravdess-emotion'"))
        ]

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    server = start_prefect_server(tmp_path / "prefect-home", port)
    try:
        served = serve_deployments(project, api, tmp_path / "serve.log")
        try:
            from prefect.client.orchestration import get_client
            from prefect.settings import PREFECT_API_URL, temporary_settings

            with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
                deployment = client.read_deployment_by_name("retrain/retrain")
            assert deployment.schedules[0].schedule.cron == PARAMS["retrain"]["schedule"]

            run, text = retrain_via_api(api)
            assert run.state.is_completed(), (run.state.message, (tmp_path / "serve.log").read_text()[-3000:])
            assert "**Stages re-run**: ingest, validate, featurize, train" in text
            assert "**promoted to `champion`**" in text and "## MLflow" in text
            assert versions() == ["1"]

            write_corpus(source, actors=[4], seed=0, n_jobs=2)  # a new speaker arrives
            run, text = retrain_via_api(api)
            assert run.state.is_completed(), run.state.message
            assert "**Ingest**: 104 added, 0 changed, 0 removed (416 files)" in text
            assert "handmade 104 new / 312 reused" in text and "logmel 104 new / 312 reused" in text
            assert "registered as version 2" in text and versions() == ["1", "2"]

            run, text = retrain_via_api(api)
            assert run.state.is_completed(), run.state.message
            assert "**Stages re-run**: none" in text and "Nothing was retrained" in text
            assert versions() == ["1", "2"]
        finally:
            stop(served)
    finally:
        stop(server)
