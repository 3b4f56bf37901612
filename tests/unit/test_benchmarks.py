"""The speed and cost benchmarks' shared helpers: common options, the stamped report, the cost note."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from tests.conftest import ROOT, benchmark_module


def test_common_options_and_a_report_stamped_with_commit_and_command(tmp_path, monkeypatch, capsys):
    common = benchmark_module("common")
    parser = argparse.ArgumentParser()
    common.add_common_args(parser, "featurize", data=True, workers=2)
    args = parser.parse_args(["--data", str(tmp_path)])
    assert args.out == ROOT / "reports" / "featurize.md" and args.data == tmp_path and args.workers == 2
    monkeypatch.setattr(sys, "argv", [str(ROOT / "benchmarks" / "featurize.py"), "--n-clips", "8"])
    common.write_report(tmp_path / "r.md", "# Title\n\nbody\n")
    lines = (tmp_path / "r.md").read_text().splitlines()
    assert lines[0] == "# Title" and lines[2].startswith("> Produced at commit ")
    assert lines[2].endswith("by: `python benchmarks/featurize.py --n-clips 8`") and lines[4] == "body"
    assert "body" in capsys.readouterr().out


def test_cost_table_note_reports_the_load_it_was_measured_under():
    note = benchmark_module("accuracy").load_note
    assert "0.5–2.0" in note([{"load": 2.0}, {"load": 0.5}]) and "not recorded" not in note([{"load": 1.0}])
    assert "some rows: not recorded" in note([{"load": 1.0}, {}])
    assert "load not recorded" in note([{}])


def test_accuracy_report_describes_the_sample_from_its_files(tmp_path, write_wav):
    describe = benchmark_module("accuracy").describe_data
    speech, song = tmp_path / "speech", tmp_path / "song"
    write_wav(speech / "Actor_01" / "03-01-03-01-01-01-01.wav", np.zeros(16_000, np.float32))
    write_wav(speech / "Actor_02" / "03-01-04-02-02-01-02.wav", np.zeros(24_000, np.float32))
    write_wav(song / "Actor_01" / "03-02-03-01-01-01-01.wav", np.zeros(12_800, np.float32))
    (tmp_path / "README.md").write_text("not a clip")
    assert describe(tmp_path) == (
        "actors 01–02, 3 clips (2 speech at full length, 1.00–1.50 s, median 1.25 s; "
        "1 song, each cut to its first 0.80 s) at 16 kHz; 2 classes"
    )
    assert describe(tmp_path / "absent").startswith("no RAVDESS clips under")


def test_accuracy_report_breaks_actor_kfold_results_down_by_group(tmp_path, monkeypatch):
    accuracy = benchmark_module("accuracy")
    groups = {
        "gender": {"female": 0.7, "male": 0.5},
        "intensity": {"1": 0.4, "2": 0.8},
        "statement": {"1": 0.55, "2": 0.65},
        "vocal_channel": {"1": 0.45, "2": 0.75},
    }
    history = [{"train_loss": [2.0, 1.0, 0.5], "val_recall": [0.2, 0.4, 0.3]}, {"train_loss": [2.0, 1.5]}]
    fields = ("model", "norm", "protocol", "subset", "accuracy")
    rows = [
        dict(zip(fields, ("svm", False, "actor-kfold", "all", 0.6), strict=True)) | {"groups": groups},
        dict(zip(fields, ("cnn", True, "actor-kfold", "speech", 0.5), strict=True))
        | {"groups": {**groups, "vocal_channel": {"1": 0.5}}, "history": history},
        dict(zip(fields, ("rf", False, "random", "all", 0.9), strict=True)) | {"groups": groups},
        dict(zip(fields, ("mlp", False, "actor-kfold", "all", 0.6), strict=True)),  # stored before groups
    ]
    table = accuracy.group_rows(rows)
    assert [(r["model"], r["speaker norm"]) for r in table] == [("svm", "no"), ("cnn", "yes")]
    svm, cnn = table
    assert (svm["male"], svm["female"], svm["normal"], svm["strong"]) == ("0.500", "0.700", "0.400", "0.800")
    kids, dogs = '"Kids are talking by the door"', '"Dogs are sitting by the door"'
    assert (svm[kids], svm[dogs]) == ("0.550", "0.650")
    assert (svm["speech"], svm["song"]) == ("0.450", "0.750") and (cnn["speech"], cnn["song"]) == ("–", "–")
    assert list(accuracy.mean_curve(history, "train_loss")) == [2.0, 1.25, 0.5]
    assert accuracy.curve_rows(rows)[0]["epochs per fold"] == "2 (2–3)"
    assert accuracy.curves_section(rows)[2].startswith(f"[{accuracy.CURVES}]({accuracy.CURVES})")
    assert accuracy.curves_section(rows[:1]) == []
    assert accuracy.plot_learning_curves(rows, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not accuracy.plot_learning_curves(rows[:1], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_accuracy_report_renders_the_sample_groups_and_curves(tmp_path, monkeypatch, write_wav):
    accuracy = benchmark_module("accuracy")
    monkeypatch.setattr(accuracy, "FEATURES", tmp_path / "no-cache")
    write_wav(tmp_path / "data" / "speech" / "Actor_03" / "03-01-05-01-01-01-03.wav", np.zeros(8_000))
    settings = accuracy.load_params(ROOT / "params.yaml")
    row = {"model": "cnn", "norm": False, "protocol": "actor-kfold", "subset": "speech", "folds": 6}
    row |= {metric: 0.5 for metric in ("accuracy", "uar", "weighted_f1", "train_s")}
    row |= {f"{metric}_sd": 0.1 for metric in ("accuracy", "uar", "weighted_f1")}
    row |= {"groups": {"gender": {"male": 0.5}}, "history": [{"train_loss": [1.0], "val_recall": [0.5]}]}
    store = {"results": {accuracy.key(row): row | {"section": settings["cnn"]}}, "timing": {}}
    report = accuracy.render(store, settings, tmp_path / "data")
    sample = "actors 03, 1 clips (1 speech, each cut to its first 0.50 s) at 16 kHz; 1 classes"
    assert f"on data: {sample}. " in report
    assert "1244 clips" not in report and "## Accuracy per group" in report
    assert "| cnn   | speech | no           | 0.500     | 0.500 | –      |" in report
    assert f"[{accuracy.CURVES}]({accuracy.CURVES})" in report
    single = row | {"protocol": "random", "subset": "all", "folds": 1, "command": "python x.py"}
    figures = accuracy.headline([row, single], sample)
    assert figures["data"] == sample and figures["commands"] == ["(unrecorded)", "python x.py"]
    assert [(r["protocol"], r["accuracy_sd"], r["uar_sd"]) for r in figures["results"]] == [
        ("actor-kfold", 0.1, 0.1),
        ("random", None, None),
    ]
    assert "history" not in figures["results"][0] and "groups" not in figures["results"][0]


def test_accuracy_report_lists_each_harness_question_against_its_baseline(tmp_path, monkeypatch):
    import json

    accuracy = benchmark_module("accuracy")
    (tmp_path / "experiments" / "configs").mkdir(parents=True)
    (tmp_path / "reports").mkdir()
    for name in ("asked", "unanswered"):  # a config without a report is left out
        (tmp_path / "experiments" / "configs" / f"{name}.yaml").write_text("question: q\n")
    rows = [
        {"model": "a", "subset": "speech", "uar": 0.5, "uar_sd": 0.1},
        {"model": "b", "subset": "speech", "uar": 0.6, "uar_sd": 0.1},
        {"model": "b+speaker_norm", "subset": "speech", "uar": 0.75, "uar_sd": 0.1},
    ]
    report = {"question": "does b beat a", "command": "cmd", "primary_metric": "uar", "baseline": "a"}
    (tmp_path / "reports" / "asked.json").write_text(json.dumps(report | {"rows": rows}))
    monkeypatch.setattr(accuracy, "ROOT", tmp_path)
    [(count, lines)] = accuracy.harness_lines()
    assert count == 3 and lines[0].startswith("Does b beat a? ") and "reports/asked.md" in lines[0]
    assert lines[2:5] == [
        "- b+speaker_norm, speech: uar 0.750 ± 0.100 (+0.150 vs plain)",
        "- b, speech: uar 0.600 ± 0.100 (+0.100 vs a)",
        "- a, speech: uar 0.500 ± 0.100",
    ]
