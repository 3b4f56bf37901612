"""Reliability on bad inputs: ``ser validate`` names each bad file, raw files stay untouched, and a
SIGKILLed ``ser featurize`` resumes to the same tables (cases built by ``benchmarks/reliability.py``)."""

from __future__ import annotations

import importlib.util
import sys

import pandas as pd
import pytest
import soundfile as sf

from tests.conftest import ROOT, tone


@pytest.fixture(scope="module")
def reliability():
    """The benchmark script as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("reliability", ROOT / "benchmarks" / "reliability.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["reliability"] = module
    spec.loader.exec_module(module)
    return module


def write_good(folder, n_clips: int, seconds: float = 2.0) -> list:
    """Good clips of actor 01 (16 kHz tones), RAVDESS-named."""
    paths = []
    for index in range(n_clips):
        path = (
            folder
            / "Actor_01"
            / f"03-01-{2 + index // 8:02d}-01-{index // 4 % 2 + 1:02d}-{index % 2 + 1:02d}-01.wav"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, tone(seconds, seed=index, freq=150 + 20 * index), 16_000)
        paths.append(path)
    return paths


def test_validate_names_each_bad_file_and_leaves_raw_files_alone(tmp_path, reliability):
    data, out = tmp_path / "data", tmp_path / "out"
    good = write_good(data, 4)
    cases = [
        c for c in reliability.build_file_cases(data / "bad", good[0], long=False) if c.expect == "reject"
    ]
    before = reliability.hash_tree(data)
    tree = reliability.list_tree(tmp_path)

    run = reliability.ser(
        ["validate", str(data), "--out", str(out), "--params", str(ROOT / "params.yaml")], tmp_path
    )

    assert run["rc"] == 1, run["output"]  # most files are bad: more than max_rejected_share
    assert "Traceback" not in run["output"]
    assert "data validation failed" in run["output"]
    rejected = dict(pd.read_csv(out / "rejected.csv", keep_default_na=False)[["location", "reason"]].values)
    for case in cases:
        reason = rejected.get(str(case.path))
        assert reason, f"{case.name}: not in the rejected table"
        assert "not met" not in reason, f"{case.name}: unspecific reason {reason!r}"
        assert str(case.path) in run["output"], f"{case.name}: the output does not name the file"
    assert reliability.hash_tree(data) == before
    assert {p for p in reliability.list_tree(tmp_path) - tree if not p.startswith("out")} == set()


def test_killed_featurize_resumes_to_identical_tables(tmp_path, reliability):
    write_good(tmp_path / "data", 24, seconds=3.0)
    (tmp_path / "work").mkdir()
    result = reliability.kill_and_resume(tmp_path / "data", tmp_path, n_trials=1, seed=1, sets="handmade")
    (trial,) = result["trials"]
    assert trial["identical"], trial
    assert trial["same_bytes"], trial
    assert not [name for name in trial["leftovers"] if not name.startswith(".")], trial


@pytest.mark.slow
def test_killed_train_runs_resume_to_identical_results_and_never_leave_a_broken_champion(
    tmp_path, reliability
):
    """One kill while models train, one while the best is refit and registered (``python -m flows.train``)."""
    result = reliability.train_kill_and_resume(tmp_path, n_trials=2, seed=0)
    for trial in result["trials"]:
        assert trial["identical"], trial
        loaded, registered = map(int, trial["loadable"].split("/"))
        assert loaded == registered, trial  # no registered version points at a partly written model
        if not trial["champion_kept"]:  # moved only by a run that had finished registering its model
            assert trial["champion_after_kill"] == trial["champion_final"], trial
        assert trial["previous_final"] == "1", trial  # the placeholder it replaced can be rolled back to
        assert trial["stray_files"] == [], trial


@pytest.mark.slow
def test_killed_fine_tuning_resumes_from_its_last_checkpoint_to_identical_weights(
    tmp_path, reliability, demo_features
):
    result = reliability.finetune_kill_and_resume(
        tmp_path, demo_features / "data" / "raw", n_trials=1, seed=0
    )
    (trial,) = result["trials"]
    assert trial["killed"], trial
    assert trial["identical"], trial
    # the fold killed mid-way continued from the epoch its last.pt holds
    for fold, epoch in trial["resumed_at"].items():
        assert trial["epochs_saved"][fold] == epoch, trial
