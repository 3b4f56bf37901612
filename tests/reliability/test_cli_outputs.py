"""The ``ser`` command's outputs, Ctrl-C and settings errors (issue 20), through the real CLI.

Every mistake is one ``error:`` line on stderr naming the file or setting, exit status 1, no
traceback, and it is found before any work. Ctrl-C (a real SIGINT to the process group) stops
a run within seconds with exit status 130, leaves no temporary or lock file and keeps older
outputs byte for byte. Outputs keep an existing file's mode, else follow the umask.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT

PARAMS = ROOT / "params.yaml"
SER = [sys.executable, "-m", "cli"]
GOOD = "03-01-05-02-01-01-01.wav"
BAD = "03-01-05-02-01-02-01.wav"


def ser(
    args: list[str], cwd: Path, env: dict | None = None, umask: int = -1, timeout: float = 300, prefix=()
):
    """Run ``ser ARGS`` in a fresh process (``prefix``: e.g. a read-only mount namespace)."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [*prefix, *SER, *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        umask=umask,
    )


def assert_one_line_error(done: subprocess.CompletedProcess, *names: str) -> str:
    """Exit 1, no traceback, exactly one stderr line, ``error: ...`` naming each of ``names``."""
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), lines
    for name in names:
        assert name in lines[0], (name, lines[0])
    assert done.returncode == 1, done.stderr
    return lines[0]


def read_only(folder: Path) -> tuple[str, ...]:
    """Make ``folder`` read-only for the command; returns the command prefix that does it.

    chmod 0555 stops a normal user; root writes through it, so as root the command runs in a
    private mount namespace where ``folder`` is bind-mounted read-only (skip where that fails).
    """
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return ()
    if shutil.which("unshare") is None:
        pytest.skip("running as root without unshare: cannot make a folder read-only")
    prefix = ("unshare", "--mount", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(folder))
    probe = subprocess.run([*prefix, "touch", str(folder / "probe")], capture_output=True, text=True)
    if "Read-only" not in probe.stderr:
        pytest.skip(f"running as root and a read-only bind mount failed: {probe.stderr.strip()}")
    return prefix


@pytest.fixture
def clips(tmp_path, write_wav) -> Path:
    """A folder with one good clip."""
    write_wav(tmp_path / "data" / GOOD)
    return tmp_path / "data"


def bad_params(tmp_path: Path, change) -> Path:
    """params.yaml with ``change(settings)`` applied, written to ``tmp_path``."""
    settings = yaml.safe_load(PARAMS.read_text())
    change(settings)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


SETTINGS_CASES = {
    "missing section": (lambda s: s.pop("featurize"), ["missing section 'featurize'"]),
    "misspelled key": (
        lambda s: s["validate"].update(max_rejected_shar=s["validate"].pop("max_rejected_share")),
        ["unknown key validate.max_rejected_shar", "max_rejected_share"],
    ),
    "text for a number": (
        lambda s: s["preprocess"].update(clip_dur="four"),
        ["preprocess.clip_dur", "number"],
    ),
    "negative clip length": (lambda s: s["preprocess"].update(clip_dur=-1.0), ["preprocess.clip_dur", "-1"]),
}


@pytest.mark.parametrize("case", list(SETTINGS_CASES))
def test_a_broken_setting_is_one_line_naming_file_and_key_before_any_work(case, tmp_path, clips):
    change, words = SETTINGS_CASES[case]
    params = bad_params(tmp_path, change)
    out = tmp_path / "features"
    done = ser(["featurize", str(clips), "--out", str(out), "--params", str(params)], tmp_path)
    assert_one_line_error(done, str(params), *words)
    assert not out.exists()  # refused before anything was written


def test_validate_calls_an_empty_data_folder_an_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    validated = ser(["validate", str(empty), "--params", str(PARAMS)], tmp_path)
    assert_one_line_error(validated, str(empty), "no audio files")
    assert "rejected" not in validated.stdout  # no "0 files rejected (100.0%)" report


def test_featurize_calls_an_empty_data_folder_an_error_not_an_empty_success(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "features"
    featurized = ser(["featurize", str(empty), "--out", str(out), "--params", str(PARAMS)], tmp_path)
    assert_one_line_error(featurized, str(empty), "nothing to featurize")
    assert not list(out.glob("*.parquet"))


def test_a_failed_validation_prints_its_report_once(clips):
    (clips / BAD).write_bytes(b"not audio at all")
    done = ser(["validate", str(clips), "--params", str(PARAMS)], clips.parent)
    line = assert_one_line_error(done, "data validation failed", "max_rejected_share")
    assert BAD not in line
    assert (done.stdout + done.stderr).count(BAD) == 1, done.stdout + done.stderr  # the report, on stdout


def test_predict_refuses_a_params_file_that_is_not_there(tmp_path, clips):
    missing = tmp_path / "missing.yaml"
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'none.db'}"}  # used to run on defaults
    done = ser(["predict", str(clips / GOOD), "--params", str(missing)], tmp_path, env)
    assert_one_line_error(done, str(missing), "no params file")
    assert not (tmp_path / "none.db").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["validate", "{data}", "--out", "{ro}/report"],
        ["validate", "{data}", "--docs", "{ro}"],
        ["featurize", "{data}", "--out", "{ro}"],
        ["predict", "{data}/" + GOOD, "--json", "{ro}/results.json"],
        ["evaluate", "{data}", "--json", "{ro}/results.json", "--features", "{tmp}/features"],
    ],
    ids=["validate-out", "validate-docs", "featurize-out", "predict-json", "evaluate-json"],
)
def test_an_unwritable_output_is_refused_before_any_work(command, tmp_path, clips):
    ro = tmp_path / "ro"
    ro.mkdir()
    prefix = read_only(ro)
    args = [part.format(data=clips, ro=ro, tmp=tmp_path) for part in command] + ["--params", str(PARAMS)]
    start = time.perf_counter()
    done = ser(
        args, tmp_path, env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'none.db'}"}, prefix=prefix
    )
    option = next(
        part for part in command if part.startswith("--") and "{ro}" in command[command.index(part) + 1]
    )
    assert_one_line_error(done, option, str(ro), "cannot write")
    assert done.stdout == ""  # no report, no results: nothing was done
    assert not (tmp_path / "features").exists() and not (tmp_path / "none.db").exists()
    assert time.perf_counter() - start < 60


@pytest.mark.parametrize("option", ["--csv", "--json"])
def test_predict_refuses_a_folder_as_its_output_file(option, tmp_path, clips):
    folder = tmp_path / "results"
    folder.mkdir()
    done = ser(["predict", str(clips / GOOD), option, str(folder), "--params", str(PARAMS)], tmp_path)
    assert_one_line_error(done, option, str(folder), "is a folder")


def test_featurize_refuses_a_file_as_its_output_folder(tmp_path, clips):
    target = tmp_path / "features"
    target.write_text("a file")
    done = ser(["featurize", str(clips), "--out", str(target), "--params", str(PARAMS)], tmp_path)
    assert_one_line_error(done, "--out", str(target), "not a folder")
    assert target.read_text() == "a file"


def test_outputs_follow_the_umask_and_keep_an_existing_files_mode(tmp_path, clips):
    out = tmp_path / "report"
    out.mkdir()
    (out / "rejected.csv").write_text("old\n")
    (out / "rejected.csv").chmod(0o604)
    done = ser(["validate", str(clips), "--out", str(out), "--params", str(PARAMS)], tmp_path, umask=0o027)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((out / "clips.parquet").stat().st_mode) == 0o640  # new: 0666 less the umask
    assert stat.S_IMODE((out / "rejected.csv").stat().st_mode) == 0o604  # rewritten: its mode kept
    assert (out / "rejected.csv").read_text() != "old\n"
    assert sorted(p.name for p in out.iterdir()) == ["clips.parquet", "rejected.csv"]  # no temp files


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_the_atomic_writers_follow_the_umask_and_keep_modes(tmp_path, umask):
    from components.data.parquet import write_table
    from components.runtime.files import write_json, write_text

    before = os.umask(umask)
    try:
        write_text(tmp_path / "new.txt", "x")
        write_table(pd.DataFrame({"a": [1]}), tmp_path / "new.parquet")
        (tmp_path / "old.json").write_text("{}")
        (tmp_path / "old.json").chmod(0o640)
        write_json(tmp_path / "old.json", {"a": 1})
    finally:
        os.umask(before)
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "new.parquet").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "old.json").stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.parquet", "new.txt", "old.json"]


def test_a_folder_lock_stays_inside_the_folder(tmp_path):
    from components.runtime.locks import INSIDE_NAME, hold_lock

    out = tmp_path / "features"
    with hold_lock(out, "featurize", inside=True):
        assert sorted(p.name for p in tmp_path.iterdir()) == ["features"]  # nothing beside --out
        assert (out / INSIDE_NAME).is_file()
    assert list(out.iterdir()) == []


# Ctrl-C: a real SIGINT to the command's process group once its work has started.

TRIES = int(os.environ.get("SER_SIGINT_TRIES", "2"))
EXIT_WITHIN_S = 3.0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """208 synthetic clips of 2 actors, and a tiny registered model (hand-made features)."""
    from components.data.synth import write_corpus
    from tests.reliability.trial import train_tiny_model

    root = tmp_path_factory.mktemp("sigint")
    write_corpus(root / "data", n_actors=2, n_jobs=2)
    small = root / "small" / "Actor_01"
    small.mkdir(parents=True)
    for path in sorted((root / "data" / "speech" / "Actor_01").glob("*.wav"))[:16]:
        shutil.copy(path, small / path.name)
    (root / "uri").write_text(train_tiny_model(small.parent, root))
    return root


class Run:
    """``ser ARGS`` in its own session, stderr read as it comes (tqdm writes ``\\r`` lines)."""

    def __init__(self, args: list[str], cwd: Path, env: dict | None = None) -> None:
        environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.process = subprocess.Popen(
            [*SER, *args], cwd=cwd, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        self.stderr = b""
        self.stdout = b""
        self._readers = [
            threading.Thread(target=self._read, args=("stderr",), daemon=True),
            threading.Thread(target=self._read, args=("stdout",), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, name: str) -> None:
        stream = getattr(self.process, name)
        while chunk := os.read(stream.fileno(), 4096):
            setattr(self, name, getattr(self, name) + chunk)

    def wait_for(self, started, timeout: float = 120) -> None:
        """Wait until ``started(self)``; fail if the command ends first."""
        deadline = time.monotonic() + timeout
        while not started(self):
            assert self.process.poll() is None, f"ended before the check: {self.stderr.decode()[-2000:]}"
            assert time.monotonic() < deadline, f"never started: {self.stderr.decode()[-2000:]}"
            time.sleep(0.01)

    def interrupt(self) -> float:
        """SIGINT to the whole process group (as Ctrl-C); seconds until the command exited."""
        sent = time.monotonic()
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            pytest.fail(f"still running 30 s after SIGINT: {self.stderr.decode()[-2000:]}")
        elapsed = time.monotonic() - sent
        for reader in self._readers:
            reader.join(timeout=5)
        with_children_gone = time.monotonic() + 10
        while _group_alive(self.process.pid) and time.monotonic() < with_children_gone:
            time.sleep(0.05)
        return elapsed


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def progress(name: str, at_least: int = 1):
    """A check: the ``name`` progress bar has counted ``at_least`` items."""
    pattern = re.compile(rf"{name}:\s+\d+%\|[^|]*\|\s*(\d+)/")

    def started(run: Run) -> bool:
        counts = [int(n) for n in pattern.findall(run.stderr.decode(errors="replace"))]
        return bool(counts) and max(counts) >= at_least

    return started


def reading_under(folder: Path):
    """A check: the command has a file under ``folder`` open (it is reading the audio)."""

    def started(run: Run) -> bool:
        try:
            fds = os.listdir(f"/proc/{run.process.pid}/fd")
        except OSError:
            return False
        for fd in fds:
            try:
                if os.readlink(f"/proc/{run.process.pid}/fd/{fd}").startswith(str(folder)):
                    return True
            except OSError:
                continue
        return False

    return started


def leftovers(*folders: Path) -> list[str]:
    """Temporary and lock files under ``folders``."""
    found = []
    for folder in folders:
        for path in folder.rglob("*") if folder.exists() else []:
            if path.name.endswith((".tmp", ".lock")):
                found.append(str(path))
    return found


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def check_interrupted(run: Run, elapsed: float, old: dict[str, bytes], out: Path) -> None:
    stderr = run.stderr.decode(errors="replace")
    print(f"{run.process.args[3]}: exit {run.process.returncode} {elapsed:.2f} s after SIGINT")  # with -s
    assert run.process.returncode == 130, stderr[-2000:]
    assert elapsed < EXIT_WITHIN_S, f"exited {elapsed:.2f} s after SIGINT"
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr[-3000:]
    assert stderr.rstrip().endswith("error: interrupted"), stderr[-500:]
    assert snapshot(out) == old  # older outputs byte for byte, nothing new, no partial file
    assert not leftovers(out), leftovers(out)
    assert not _group_alive(run.process.pid), "worker processes outlived the command"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see the run start reading")
@pytest.mark.parametrize("n_jobs", ["1", "2"])
def test_ctrl_c_stops_featurize_mid_extraction(corpus, tmp_path, n_jobs):
    out = tmp_path / "features"
    args = ["featurize", "--sets", "egemaps", "--n-jobs", n_jobs, "--params", str(PARAMS)]
    done = ser([*args[:1], str(corpus / "small"), "--out", str(out), *args[1:]], tmp_path)
    assert done.returncode == 0, done.stderr
    old = snapshot(out)
    for _ in range(TRIES):
        run = Run([*args[:1], str(corpus / "data"), "--out", str(out), *args[1:]], tmp_path)
        run.wait_for(progress("featurize", 16))  # openSMILE is extracting the new clips
        assert (out / ".ser.lock").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["features"]
        check_interrupted(run, run.interrupt(), old, out)


@pytest.mark.slow
def test_ctrl_c_stops_validate_while_it_reads_the_clips(corpus, tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "clips.parquet").write_bytes(b"an older table")
    (out / "rejected.csv").write_bytes(b"an older list\n")
    old = snapshot(out)
    for _ in range(TRIES):
        run = Run(["validate", str(corpus / "data"), "--out", str(out), "--params", str(PARAMS)], tmp_path)
        run.wait_for(reading_under(corpus / "data"))
        time.sleep(0.3)
        check_interrupted(run, run.interrupt(), old, out)


@pytest.mark.slow
def test_ctrl_c_stops_predict_mid_run(corpus, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "results.json").write_bytes(b'{"older": true}\n')
    (out / "results.csv").write_bytes(b"older\n")
    old = snapshot(out)
    env = {"MLFLOW_TRACKING_URI": (corpus / "uri").read_text()}
    args = ["predict", str(corpus / "data"), "--json", str(out / "results.json")]
    args += ["--csv", str(out / "results.csv"), "--params", str(PARAMS)]
    for _ in range(TRIES):
        run = Run(args, tmp_path, env)
        run.wait_for(progress("predict", 10))
        check_interrupted(run, run.interrupt(), old, out)


@pytest.mark.slow
def test_ctrl_c_stops_evaluate_mid_featurize(corpus, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_bytes(b"[]\n")
    old = snapshot(out)
    args = ["evaluate", str(corpus / "data"), "--models", "logreg", "--protocol", "holdout"]
    features = tmp_path / "features"  # a cache: tables finished before Ctrl-C may stay
    args += ["--test-actors", "2", "--features", str(features), "--json", str(out / "results.json")]
    for _ in range(TRIES):
        run = Run([*args, "--params", str(PARAMS)], tmp_path)
        run.wait_for(progress("featurize", 16))
        check_interrupted(run, run.interrupt(), old, out)
        assert not leftovers(features), leftovers(features)
