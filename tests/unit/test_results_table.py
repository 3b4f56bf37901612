"""The README results table: rendered from a metrics file, written between the markers, checked."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "results_table.py"


@pytest.fixture(scope="module")
def results_table():
    spec = importlib.util.spec_from_file_location("results_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(model, protocol, subset, accuracy, uar, sd=0.05):
    single = protocol == "random"
    return {
        "model": model,
        "protocol": protocol,
        "subset": subset,
        "n_folds": 1 if single else 6,
        "accuracy": accuracy,
        "accuracy_sd": None if single else sd,
        "uar": uar,
        "uar_sd": None if single else sd,
        "weighted_f1": accuracy,
        "weighted_f1_sd": None if single else sd,
        "train_seconds": 1.0,
    }


TRAIN = {
    "best": {"model": "svm", "uar": 0.61234},
    "registry": {"promoted": True, "reason": "no champion yet", "replaced": None, "version": 1},
    "results": [
        row("svm", "actor-kfold", "all", 0.6, 0.6123),
        row("rf", "actor-kfold", "all", 0.5, 0.49),
        row("rf", "actor-kfold", "speech", 0.55, 0.54),
        row("svm", "actor-kfold", "speech", 0.52, 0.51),
        row("svm", "random", "all", 0.9, 0.88),
        row("rf", "random", "all", 0.8, 0.79),
    ],
    "seconds": {"concurrent": 1.0, "one_at_a_time": 2.0},
}
INGEST = {"source": "demo", "n_files": 832}


def write_metrics(folder, train=TRAIN, ingest=INGEST):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.json").write_text(json.dumps(train))
    (folder / "ingest.json").write_text(json.dumps(ingest))
    return folder


def test_render_puts_speaker_independent_columns_first_and_sorts_by_the_primary_run(results_table):
    text = results_table.render(TRAIN, INGEST, date="2026-12-04")
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert table[0] == "| model | actor-kfold, speech | actor-kfold, all | random (leaky), all |"
    assert table[2].startswith(
        "| svm | 0.520 ± 0.050 / 0.510 | **0.600 ± 0.050 / 0.612** | **0.900 / 0.880** |"
    )
    assert table[3].startswith("| rf | **0.550 ± 0.050 / 0.540** |")
    assert "demo corpus** (832 clips" in text and "not RAVDESS numbers" in text
    assert "(written 2026-12-04)" in text and "sorted by UAR on actor-kfold, all" in text
    assert "best: **svm**, registered as version 1, promoted to `champion` (no champion yet)." in text


def test_render_adds_wav2vec2_rows_or_says_why_it_skipped(results_table):
    scored = {"status": "ok", "results": [row("wav2vec2-embed", "actor-kfold", "all", 0.7, 0.69)]}
    assert "| wav2vec2-embed | – | **0.700 ± 0.050 / 0.690** | – |" in results_table.render(
        TRAIN, INGEST, scored
    )
    skipped = {"status": "skipped: pretrained weights for facebook/wav2vec2-base are not available offline"}
    assert "wav2vec2: skipped: pretrained weights" in results_table.render(TRAIN, INGEST, skipped)


def test_a_real_source_is_named_and_no_metrics_says_how_to_get_them(results_table):
    text = results_table.render(TRAIN, {"source": "/data/ravdess", "n_files": 2880})
    assert "RAVDESS files from `/data/ravdess` (2880 clips)" in text and "demo" not in text
    assert "run `make run`" in results_table.render(None)


def test_main_rewrites_only_the_block_and_check_follows_the_metrics(results_table, tmp_path, capsys):
    metrics = write_metrics(tmp_path / "metrics")
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\n<!-- results:start -->\nold table\n<!-- results:end -->\n\n## Next\n")
    args = ["--metrics", str(metrics), "--readme", str(readme)]

    assert results_table.main([*args, "--check"]) == 1
    assert results_table.main(args) == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\n<!-- results:start -->\nProduced by `make run`")
    assert text.endswith("\n<!-- results:end -->\n\n## Next\n") and "old table" not in text
    assert results_table.main(args) == 0 and readme.read_text() == text  # idempotent
    assert results_table.main([*args, "--check"]) == 0

    readme.write_text(results_table.DATE_PATTERN.sub("(written 1999-01-01)", text))  # only the date differs
    assert results_table.main([*args, "--check"]) == 0
    changed = dict(TRAIN, results=[dict(r, accuracy=r["accuracy"] - 0.1) for r in TRAIN["results"]])
    write_metrics(metrics, train=changed)
    assert results_table.main([*args, "--check"]) == 1
    assert "differs from the metrics" in capsys.readouterr().out


def test_print_leaves_the_readme_alone_and_a_readme_without_markers_is_refused(results_table, tmp_path):
    metrics = write_metrics(tmp_path / "metrics")
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    assert results_table.main(["--metrics", str(metrics), "--readme", str(readme), "--print"]) == 0
    assert readme.read_text() == "no markers here\n"
    assert results_table.main(["--metrics", str(metrics), "--readme", str(readme)]) == 1


def test_the_real_sample_figures_of_benchmarks_accuracy_add_a_second_table(results_table, tmp_path):
    plain = [dict(row("ensemble_compare", "actor-kfold", "all", 0.61, 0.6), norm=False, folds=6)]
    plain.append(dict(row("cnn", "random", "all", 0.7, 0.69), norm=False, folds=1))
    normalised = dict(row("cnn", "actor-kfold", "all", 0.9, 0.9), norm=True, folds=6)
    accuracy = {"data": "actors 01–12, 1248 clips", "commands": ["python benchmarks/accuracy.py"]}
    accuracy["results"] = [*plain, normalised]
    text = results_table.render(TRAIN, INGEST, date="2026-12-04", accuracy=accuracy)
    demo, real = text.split("On the **real RAVDESS sample**: actors 01–12, 1248 clips. Measured by ")
    assert "| svm |" in demo and "ensemble_compare" not in demo
    assert real.startswith("`python benchmarks/accuracy.py` and") and "0.900" not in real  # no speaker norm
    assert "| ensemble_compare | **0.610 ± 0.050 / 0.600** | – |" in real
    assert "| cnn | – | **0.700 / 0.690** |" in real
    assert results_table.render(None, accuracy=accuracy).startswith(results_table.NO_METRICS)
    assert "real RAVDESS" in results_table.render(None, accuracy=accuracy)
    assert "real RAVDESS" not in results_table.render(TRAIN, INGEST, accuracy={"results": [normalised]})

    metrics, path = write_metrics(tmp_path / "metrics"), tmp_path / "accuracy.json"
    path.write_text(json.dumps(accuracy))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:start -->\n<!-- results:end -->\n")
    args = ["--metrics", str(metrics), "--readme", str(readme), "--accuracy", str(path)]
    assert results_table.main(args) == 0
    assert "| ensemble_compare | **0.610 ± 0.050 / 0.600** | – |" in readme.read_text()
