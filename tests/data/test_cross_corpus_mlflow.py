"""The cross-corpus matrix in MLflow: ``ser evaluate ... --mlflow`` and the benchmark's ``--mlflow``."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from components.evaluation.cross_corpus import matrix_grid
from tests.conftest import ROOT, benchmark_module
from tests.data.test_corpora import _emodb_and_tess

EXPERIMENT = (
    "ravdess-ser-cross-corpus"  # params.yaml's tracking.experiment + components.tracking.cross_corpus
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _only_run(store: str):
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, [e.name for e in client.search_experiments()]
    (run,) = client.search_runs([experiment.experiment_id])
    return client, run


def _artifact(client: MlflowClient, run, name: str, tmp_path) -> bytes:
    return (tmp_path / client.download_artifacts(run.info.run_id, name, str(tmp_path))).read_bytes()


def test_cli_logs_the_leave_one_corpus_out_matrix_as_one_run(tmp_path, write_wav, mlflow_store):
    from typer.testing import CliRunner

    from cli import app

    _emodb_and_tess(tmp_path, write_wav)
    common = [f"emodb={tmp_path / 'emodb'}", f"tess={tmp_path / 'tess'}", "--models", "logreg"]
    common += ["--features", str(tmp_path / "features"), "--params", str(ROOT / "params.yaml"), "--mlflow"]
    refused = CliRunner().invoke(app, ["evaluate", *common, "--protocol", "leave-one-speaker-out"])
    assert refused.exit_code != 0 and "--mlflow logs the matrix" in str(refused.exception)
    out = tmp_path / "out.json"
    args = ["evaluate", *common, "--protocol", "leave-one-corpus-out", "--json", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cells = json.loads(out.read_text())["matrix"]
    assert sorted((c["train"], c["test"], c["n_test"]) for c in cells) == [
        ("emodb", "tess", 24),
        ("tess", "emodb", 45),
    ]

    client, run = _only_run(mlflow_store)
    assert run.info.status == "FINISHED" and f"run {run.info.run_id}" in result.output
    assert run.data.params["protocol"] == "leave-one-corpus-out"
    assert run.data.params["models"] == "logreg" and run.data.params["label_set"] == "shared"
    expected = {f"logreg/{m}.{c['train']}_to_{c['test']}": c[m] for c in cells for m in ("uar", "accuracy")}
    assert run.data.metrics == pytest.approx(expected)  # a metric per cell, nothing else
    assert run.data.metrics["logreg/uar.emodb_to_tess"] > 0.6  # chance 1/3: the cells are real scores
    table = json.loads(_artifact(client, run, "cross_corpus_matrix.json", tmp_path))
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert rows == cells
    assert _artifact(client, run, "cross_corpus_matrix.png", tmp_path).startswith(PNG_MAGIC)
    rows, columns, grid = matrix_grid(cells, "logreg", "uar")  # what the heat map draws
    assert rows == columns and sorted(rows) == ["emodb", "tess"]  # each test corpus under its own row
    assert grid[rows.index("emodb"), columns.index("tess")] == expected["logreg/uar.emodb_to_tess"]


def test_the_benchmark_logs_its_matrix_with_the_same_function(tmp_path, mlflow_store):
    bench = benchmark_module("cross_corpus")
    names, rows = ["ravdess", "emodb"], ["ravdess", "emodb", bench.JOINT]

    def cell(uar: float) -> dict:
        scores = {"uar": uar, "accuracy": uar + 0.05, "n": 10}
        return {
            "by_norm": {
                n: {"all": scores, "val": scores, "test": scores} for n in ("none", "speaker", "corpus")
            }
        }

    uars = {(r, t): 0.1 * (i + 1) + 0.01 * j for i, r in enumerate(rows) for j, t in enumerate(names)}
    result = {
        "corpora": dict.fromkeys(names, "somewhere"),
        "models": {
            "svm": {
                "cells": {r: {t: {**cell(uars[r, t]), "chosen": "none"} for t in names} for r in rows},
                "classes": ["neutral", "sad"],
            }
        },
    }
    bench.log_to_mlflow(result, bench.figure(result))
    client, run = _only_run(mlflow_store)
    assert run.data.metrics["svm/uar.ravdess_to_emodb"] == pytest.approx(uars["ravdess", "emodb"])
    assert run.data.metrics["svm/accuracy.all_together_to_ravdess"] == pytest.approx(
        uars[bench.JOINT, "ravdess"] + 0.05
    )
    assert len(run.data.metrics) == 2 * len(rows) * len(names)
    assert run.data.params["classes"] == "neutral,sad"
    assert _artifact(client, run, "cross_corpus_matrix.png", tmp_path).startswith(PNG_MAGIC)
