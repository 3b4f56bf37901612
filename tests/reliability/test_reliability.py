"""Reliability: bad inputs, raw-data immutability, kill and resume, concurrent runs.

The fast tests run single pieces of the trial in ``tests/reliability/trial.py``; the slow ones run
the whole trial once (what ``python -m tests.reliability.trial`` reports in reports/reliability.md)
and assert every check its report shows.
"""

from __future__ import annotations

import pandas as pd
import pytest
import soundfile as sf

from tests.conftest import ROOT, tone
from tests.reliability import trial as reliability_trial


@pytest.fixture(scope="module")
def reliability():
    """The trial module: case builders, runners and the report."""
    return reliability_trial


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
        shown = str(case.path) if str(case.path).isprintable() else ascii(str(case.path))  # escaped: one line
        assert shown in run["output"], f"{case.name}: the output does not name the file"
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


@pytest.fixture(scope="module")
def full_trial(tmp_path_factory) -> dict:
    """The whole trial once, one kill-and-resume trial of each kind (about 15 min on 2 busy cores)."""
    root = tmp_path_factory.mktemp("reliability")
    result = reliability_trial.run_trial(root, n_trials=1, seed=0, train_trials=1, finetune_trials=1)
    (root / "reliability.md").write_text(reliability_trial.format_report(result))  # the report renders
    return result


@pytest.mark.slow
def test_every_bad_input_gets_a_clear_message_and_no_crash(full_trial):
    unclear = [row for row in full_trial["rows"] if not row["clear"] or row["crash"]]
    assert unclear == [], unclear


@pytest.mark.slow
def test_every_command_line_case_gets_its_expected_outcome_and_one_line(full_trial):
    """Unwritable outputs, broken settings, tracking down, a read-only store, Ctrl-C, a 10^12 Hz row."""
    unclear = [row for row in full_trial["cli_rows"] if not row["clear"] or row["crash"]]
    assert len(full_trial["cli_rows"]) == 10 and unclear == [], unclear


@pytest.mark.slow
def test_no_raw_file_changes_and_nothing_is_written_outside_the_output_folders(full_trial):
    assert full_trial["raw_changed"] == []
    assert full_trial["written_outside"] == []


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["resume", "train_resume", "finetune_resume"])
def test_killed_runs_resume_to_identical_outputs(full_trial, kind):
    trials = full_trial[kind]["trials"]
    assert trials and all(t["identical"] for t in trials), trials


@pytest.mark.slow
@pytest.mark.parametrize("name", ["featurize", "train", "dvc repro"])
def test_of_two_concurrent_runs_one_finishes_and_the_other_is_refused(full_trial, name):
    run = full_trial["concurrent"][name]
    assert run["one_finished"] and not run["traceback"], run
    assert run.get("identical", True), run
    assert run.get("integrity", "ok") in ("ok", "–"), run
    assert run.get("workspace_matches_cache", True), run  # dvc repro: dvc data status is clean
