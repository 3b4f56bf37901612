"""The ser command: help, user errors as one line, ad hoc evaluate."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from cli import app
from tests.conftest import ROOT

runner = CliRunner()
SER = [sys.executable, "-m", "cli"]


def test_help_lists_every_command_with_a_description():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("data", "validate", "featurize", "evaluate"):
        assert command in result.output
    sub = runner.invoke(app, ["data", "--help"])
    assert "synth" in sub.output and "fetch" in sub.output
    for command in (["validate"], ["featurize"], ["evaluate"], ["data", "synth"], ["data", "fetch"]):
        assert runner.invoke(app, [*command, "--help"]).exit_code == 0


def test_user_errors_are_one_line_without_a_traceback(tmp_path):
    done = subprocess.run(
        [*SER, "validate", str(tmp_path / "absent")], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("error: ") and "absent" in done.stderr


def test_validate_names_rejected_files_and_fails_over_the_threshold(tmp_path, write_wav):
    write_wav(tmp_path / "data" / "03-01-05-02-01-01-01.wav")
    (tmp_path / "data" / "03-01-05-02-01-02-01.wav").write_bytes(b"not audio at all")
    done = subprocess.run(
        [*SER, "validate", str(tmp_path / "data"), "--out", str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 1, done.stdout  # 1 of 2 rejected: over the 5% threshold
    assert "03-01-05-02-01-02-01.wav" in done.stdout and "not a readable" in done.stdout
    assert (tmp_path / "out" / "clips.parquet").exists()


def test_evaluate_scores_models_on_a_folder(demo_features, tmp_path):
    out = tmp_path / "results.json"
    result = runner.invoke(
        app,
        [
            "evaluate", str(demo_features / "data" / "raw"),
            "--protocol", "holdout", "--test-actors", "4", "--subset", "speech",
            "--models", "rf_handmade,logreg", "--features", str(tmp_path / "features"),
            "--n-workers", "1", "--json", str(out), "--params", str(ROOT / "params.yaml"),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert {row["model"] for row in rows} == {"rf_handmade", "logreg"}
    assert all(row["protocol"] == "holdout" and row["subset"] == "speech" for row in rows)
    assert all(row["accuracy"] > 0.25 for row in rows)  # chance is 1/8
    assert "| model" in result.output
    assert Path(tmp_path / "features" / "handmade.parquet").exists()


def test_evaluate_normalizes_per_speaker_on_request(demo_features, tmp_path):
    shutil.copytree(demo_features / "data" / "features", tmp_path / "features")  # reused, not re-extracted

    def evaluate(*extra: str) -> tuple[object, float]:
        out = tmp_path / f"results{len(extra)}.json"
        result = runner.invoke(
            app,
            [
                "evaluate", str(demo_features / "data" / "raw"),
                "--protocol", "holdout", "--test-actors", "4", "--subset", "speech",
                "--models", "rf_handmade", "--features", str(tmp_path / "features"),
                "--n-workers", "1", "--json", str(out), "--params", str(ROOT / "params.yaml"), *extra,
            ],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        return result, json.loads(out.read_text())[0]["accuracy"]

    plain, plain_accuracy = evaluate()
    normalised, normalised_accuracy = evaluate("--normalize", "speaker")
    assert "speaker normalisation" in normalised.output and "speaker normalisation" not in plain.output
    assert normalised_accuracy != plain_accuracy  # the forest saw other features
    corpus = runner.invoke(
        app, ["evaluate", "x", "--normalize", "corpus", "--params", str(ROOT / "params.yaml")]
    )
    assert corpus.exit_code == 1 and "--normalize corpus" in str(corpus.exception)
