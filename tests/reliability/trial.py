"""Reliability trial: ``ser validate``, ``ser predict`` and ``ser featurize`` on bad inputs.

Builds every input itself in a temporary folder: a one-actor demo corpus (good clips) beside
broken and unusual files (corrupt or truncated headers, empty and non-audio files, NaN/Inf
samples, silence, clipping, 8- to 64-bit samples, 8 and 96 kHz, 6 channels, 10-minute files
at 16 and 48 kHz, a header saying 1 Hz, 1-sample and 10 ms clips, a DC-only file, a full-scale
square wave, bad names (one ending in a newline), .mp3/.ogg files, a song clip with emotion 07, a
duplicated clip id, a symlink loop, a link to /dev/zero, a FIFO, a dangling link) and zips
(``../`` and absolute members, a zip bomb). For each case it records what ``ser validate``
and ``ser predict`` (subprocesses, a tiny logistic regression registered in a temporary
MLflow store) did, whether the message names the file and its problem, and whether a
traceback appeared. It hashes every raw file before and after (none may change) and lists
the temporary tree (nothing may appear outside the output folders), and uploads every bad file
to the web demo (``app/demo.py`` through Streamlit's AppTest). Command-line cases: unwritable
output folders, broken settings, a tracking server that is down, a read-only MLflow store, Ctrl-C,
and a REST row at 10^12 Hz.

Kill and resume: it SIGKILLs ``ser featurize`` at random times, ``python -m flows.train`` (as
``dvc repro`` runs it, on a 4-actor demo corpus) while models train or while the best one is
registered, and ``python -m flows.wav2vec2`` fine-tuning a tiny random wav2vec2 on CPU right
after a checkpoint write; each is re-run to completion and compared with an uninterrupted run
(tables, metrics, the champion's predictions, checkpoint weights, the registry's aliases).

Concurrent runs: two ``ser featurize`` on one output folder, two ``python -m flows.train`` in
one workspace and two ``dvc repro train`` on a fresh clone, each pair started at once: one must
finish with the single run's outputs, the other stop with a one-line message; the MLflow store
must pass ``PRAGMA integrity_check`` and ``dvc status`` must be clean.

Its checks run as slow tests (tests/reliability/test_reliability.py, ``make test-all``); this
module's ``main`` writes ``reports/reliability.md`` and prints it (about 30 min on 2 busy cores).

Usage: ``python -m tests.reliability.trial [--trials 3] [--train-trials 3] [--finetune-trials 3]
[--no-concurrency] [--seed 0] [--keep DIR] [--only bad-input]``
(``--only bad-input``: those cases alone, a few minutes; the report keeps its other sections.)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
PARAMS = ROOT / "params.yaml"
BAD_ACTOR = 2  # bad files carry actor 02 names; the good corpus is actor 01
OUTPUT_DIRS = ("out", "mlflow", "features", "work")  # where commands may write; everything else is input
BOMB_MEMBER_BYTES = 1_500_000_000  # x 3 members: above the 4 GB zip-bomb limit, a few MB zipped


@dataclass
class Case:
    """One bad or unusual input: where it is and what a correct pipeline does with it."""

    name: str
    path: Path
    expect: str  # "reject" (validate names it with a reason) | "accept" | "any" (either, cleanly)
    kind: str = "file"  # file (in data/) | zip (validated on its own) | folder


def _name(index: int, actor: int = BAD_ACTOR, channel: int = 1) -> str:
    """The ``index``-th valid RAVDESS name of an actor (emotions 02-08: any intensity is allowed)."""
    emotion, rest = 2 + index // 8, index % 8
    intensity, statement, repetition = rest // 4 + 1, rest // 2 % 2 + 1, rest % 2 + 1
    return f"03-{channel:02d}-{emotion:02d}-{intensity:02d}-{statement:02d}-{repetition:02d}-{actor:02d}.wav"


def _tone(dur: float, sampling_rate: int, amplitude: float = 0.3, seed: int = 0) -> np.ndarray:
    t = np.arange(int(dur * sampling_rate)) / sampling_rate
    rng = np.random.default_rng(seed)
    return (amplitude * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def _wav_bytes(signal: np.ndarray, sampling_rate: int = 16_000, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, signal, sampling_rate, subtype=subtype, format="WAV")
    return buffer.getvalue()


def build_file_cases(bad: Path, good_clip: Path | None = None, long: bool = True) -> list[Case]:
    """Write the bad and unusual files under ``bad`` (a folder inside the data folder).

    Args:
        bad: Folder to write into (created).
        good_clip: A valid clip whose id is copied under another folder (duplicate id case).
        long: Also write the 10-minute file (19 MB).
    """
    bad.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []
    counter = iter(range(56))

    def add(name: str, data: bytes, expect: str, file_name: str | None = None, folder: Path = bad) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (file_name or _name(next(counter)))
        path.write_bytes(data)
        cases.append(Case(name, path, expect))

    wav = _wav_bytes(_tone(3.0, 16_000))
    corrupt = bytearray(wav)
    corrupt[8:16] = b"JUNKJUNK"  # "WAVEfmt " gone
    nan = _tone(3.0, 16_000)
    nan[1000:1100] = np.nan
    inf = _tone(3.0, 16_000)
    inf[500] = np.inf
    add("truncated header (30 bytes)", wav[:30], "reject")
    add("corrupt header (WAVE/fmt overwritten)", bytes(corrupt), "reject")
    add("truncated data (60% of the file)", wav[: int(len(wav) * 0.6)], "any")
    add("zero-length file", b"", "reject")
    add("non-audio bytes named .wav", b"<html><body>not audio</body></html>\n" * 50, "reject")
    add("float WAV with NaN", _wav_bytes(nan, subtype="FLOAT"), "reject")
    add("float WAV with Inf", _wav_bytes(inf, subtype="FLOAT"), "reject")
    add("all-silent clip", _wav_bytes(np.zeros(48_000, np.float32)), "reject")
    add("heavily clipped clip", _wav_bytes(np.clip(10 * _tone(3.0, 16_000), -1, 1)), "reject")
    for subtype, label in (
        ("PCM_U8", "8-bit int"),
        ("PCM_24", "24-bit int"),
        ("PCM_32", "32-bit int"),
        ("FLOAT", "32-bit float"),
        ("DOUBLE", "64-bit float"),
    ):
        add(label, _wav_bytes(_tone(3.0, 16_000, seed=len(cases)), subtype=subtype), "accept")
    add("8 kHz", _wav_bytes(_tone(3.0, 8_000), 8_000), "accept")
    add("96 kHz", _wav_bytes(_tone(3.0, 96_000), 96_000), "accept")
    add("6 channels", _wav_bytes(np.tile(_tone(3.0, 16_000)[:, None], (1, 6)) / 2, 16_000), "accept")
    if long:  # low-amplitude noise: cheap to make, 19 MB
        noise = np.random.default_rng(1).integers(-300, 300, 600 * 16_000, dtype=np.int16)
        add("10-minute file (16 kHz)", _wav_bytes(noise, 16_000), "reject")
        noise = np.random.default_rng(2).integers(-300, 300, 600 * 48_000, dtype=np.int16)  # 58 MB
        add("10-minute file (48 kHz; peak memory: reports/memory.md)", _wav_bytes(noise, 48_000), "reject")
    add("WAV header saying 1 Hz (3 s at 48 kHz)", _wav_bytes(_tone(3.0, 48_000), 1), "reject")
    square = np.where(np.sin(2 * np.pi * 220 * np.arange(32_000) / 16_000) >= 0, 1.0, -1.0)
    add("1-sample clip", _wav_bytes(np.full(1, 0.3, np.float32), subtype="FLOAT"), "reject")
    add("10 ms clip", _wav_bytes(_tone(0.01, 16_000)), "reject")
    add("DC-only file", _wav_bytes(np.full(32_000, 0.5, np.float32), subtype="FLOAT"), "reject")
    add("full-scale square wave", _wav_bytes(square.astype(np.float32), subtype="FLOAT"), "reject")
    add("name ending in a newline (before .wav)", wav, "reject", "03-01-05-01-01-02-02\n.wav")
    for fmt, subtype in (("MP3", "MPEG_LAYER_III"), ("OGG", "VORBIS")):
        buffer = io.BytesIO()
        sf.write(buffer, _tone(3.0, 16_000), 16_000, format=fmt, subtype=subtype)
        name = _name(next(counter)).removesuffix("wav") + fmt.lower()
        add(f".{fmt.lower()} in the data folder", buffer.getvalue(), "reject", name)
    for label, make in (
        (".wav symlink to /dev/zero", lambda path: path.symlink_to("/dev/zero")),
        ("FIFO named .wav", os.mkfifo),
        ("dangling .wav symlink", lambda path: path.symlink_to(bad / "gone.wav")),
    ):  # not regular files: never opened (a read of /dev/zero or a FIFO would never end)
        path = bad / _name(next(counter))
        make(path)
        cases.append(Case(label, path, "reject"))
    add("unknown code (emotion 09)", wav, "reject", "03-01-09-01-01-01-02.wav")
    add("missing field (6 fields)", wav, "reject", "03-01-05-01-01-02.wav")
    add("extra field (8 fields)", wav, "reject", "03-01-05-01-01-01-02-07.wav")
    add("song clip with emotion 07", wav, "reject", "03-02-07-01-01-01-02.wav")
    if good_clip is not None:
        add("same clip id in two folders", good_clip.read_bytes(), "reject", good_clip.name, bad / "copy")
    loop = bad / "loop"
    (loop / "inner").mkdir(parents=True, exist_ok=True)
    (loop / "inner" / "back").symlink_to(loop, target_is_directory=True)
    (loop / "self").symlink_to(".", target_is_directory=True)
    cases.append(Case("symlink loop in the data folder", loop, "any", "folder"))
    return cases


def build_zip_cases(folder: Path, bomb: bool = True) -> list[Case]:
    """Zips with a ``../`` member, an absolute member and (``bomb``) 4.5 GB of zeros in 3 members."""
    folder.mkdir(parents=True, exist_ok=True)
    wav = _wav_bytes(_tone(3.0, 16_000))
    cases = []
    for label, member, file_name in (
        ("zip with a ../ member", f"../{_name(40)}", "dotdot.zip"),
        ("zip with an absolute member path", f"/tmp/{_name(41)}", "absolute.zip"),
    ):
        with zipfile.ZipFile(folder / file_name, "w") as zf:
            zf.writestr(f"Actor_02/{_name(42)}", wav)
            zf.writestr(member, wav)
        cases.append(Case(label, folder / file_name, "reject", "zip"))
    if bomb:
        path = folder / "bomb.zip"
        zeros = bytes(1 << 24)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for index in range(3):
                with zf.open(f"Actor_02/{_name(43 + index)}", "w", force_zip64=True) as member:
                    for _ in range(BOMB_MEMBER_BYTES // len(zeros)):
                        member.write(zeros)
        cases.append(Case("zip bomb (3 x 1.5 GB of zeros)", path, "reject", "zip"))
    return cases


def ser(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300, prefix: tuple = ()
) -> dict:
    """Run ``ser ARGS`` in a fresh process (``prefix``: e.g. a read-only mount); rc, output, wall time."""
    command = [*prefix, sys.executable, "-m", "cli", *args]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout
        )
        rc, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        rc, output = None, f"timed out after {timeout} s\n{err.stdout or ''}{err.stderr or ''}"
    return {"rc": rc, "output": output, "seconds": time.perf_counter() - start}


def hash_tree(root: Path) -> dict[str, str]:
    """sha256 of every regular file under ``root`` (symlinks not followed)."""
    hashes = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                hashes[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def list_tree(root: Path) -> set[str]:
    """Every path under ``root`` (symlinks listed, not followed), relative to it."""
    found = set()
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            found.add(os.path.relpath(os.path.join(folder, name), root))
    return found


def validate_outcome(case: Case, run: dict, rejected: dict[str, str], accepted: set[str]) -> tuple[str, bool]:
    """What ``ser validate`` did with a case, and whether that is the expected, clearly told outcome."""
    location = str(case.path)
    if case.kind == "zip":
        lines = [line for line in run["output"].splitlines() if line.startswith("error:")]
        first = lines[0].removeprefix("error: ") if lines else run["output"].strip().splitlines()[-1:]
        text = f"exit {run['rc']}: {first}"
        named = location in run["output"] or case.path.name in run["output"]
        return text, run["rc"] == 1 and named and "Traceback" not in run["output"]
    if case.kind == "folder":
        inside = [loc for loc in (*rejected, *accepted) if loc.startswith(location)]
        hung = run["rc"] is None
        text = "hung" if hung else f"walked once, {len(inside)} files under it, no loop"
        return text, not hung and "Traceback" not in run["output"]
    if location in rejected:
        reason = rejected[location]
        specific = bool(reason) and "not met" not in reason
        return f"rejected: {reason}", case.expect in ("reject", "any") and specific and location in run[
            "output"
        ]
    if location in accepted:
        return "accepted", case.expect in ("accept", "any")
    return "not listed", False


def predict_outcome(case: Case, result: dict | None, run: dict) -> str:
    """One line on what ``ser predict`` did with a case."""
    if result is None:
        tail = run["output"].strip().splitlines()[-1:] or [""]
        return f"exit {run['rc']}: {tail[0][:160]}"
    if result.get("error"):
        return f"error: {result['error'].removeprefix(str(case.path) + ': ')}"
    windows = f", {len(result['windows'])} windows" if result.get("windows") else ""
    return f"{result['label']} ({result['confidence']:.2f}){windows}"


def train_tiny_model(good: Path, root: Path) -> str:
    """Featurize the good clips (hand-made set), fit a logistic regression, register it as champion."""
    import mlflow

    from components.data.discover import discover
    from components.data.metadata import build_metadata
    from components.evaluation.dataset import load_dataset
    from components.features.featurize import featurize
    from components.features.sets import extract_params
    from components.models import build_model
    from components.registry.model_io import register_predictor
    from components.registry.promote import CHAMPION
    from components.serving.pyfunc import EmotionPredictor
    from components.settings import load_params

    params = load_params(PARAMS)
    extract = extract_params(params["preprocess"], params["featurize"])
    clips, _ = build_metadata(discover(good), silence_dbfs=-60.0)
    featurize(clips, root / "features" / "train", ["handmade"], extract, n_jobs=2, progress=False)
    data = load_dataset(root / "features" / "train", ["handmade"], False)
    model = build_model("logreg").fit(
        data.inputs(None, ["handmade"], False), data.labels["emotion"].to_numpy()
    )
    predictor = EmotionPredictor(model, ("handmade",), False, extract, {"model": "logreg", "kind": "logreg"})
    (root / "mlflow").mkdir(exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    cwd = Path.cwd()
    os.chdir(root / "mlflow")  # the default experiment's artifacts go under ./mlruns
    try:
        mlflow.set_tracking_uri(uri)
        tags = {"model_name": "logreg", "model_kind": "logreg", "data_version": "reliability"}
        register_predictor(predictor, params["tracking"]["model_name"], tags, CHAMPION)
    finally:
        mlflow.set_tracking_uri(None)
        os.chdir(cwd)
    return uri


def read_tables(folder: Path) -> dict[str, object]:
    import pyarrow.parquet as pq

    return {path.name: pq.read_table(path) for path in sorted(folder.glob("*.parquet"))}


def kill_and_resume(data: Path, root: Path, n_trials: int, seed: int, sets: str) -> dict:
    """SIGKILL ``ser featurize`` at random times, re-run to completion, compare with a clean run."""
    work = root / "work"
    base = ["featurize", str(data), "--sets", sets, "--n-jobs", "2", "--params", str(PARAMS)]
    reference = ser([*base, "--out", str(root / "features" / "reference")], work)
    if reference["rc"] != 0:
        raise RuntimeError(f"uninterrupted featurize failed:\n{reference['output']}")
    expected = read_tables(root / "features" / "reference")
    expected_bytes = {name: (root / "features" / "reference" / name).read_bytes() for name in expected}
    rng = random.Random(seed)
    trials = []
    for index in range(n_trials):
        out = root / "features" / f"trial-{index}"
        delay = rng.uniform(0.3, 0.9) * reference["seconds"]
        command = [sys.executable, "-m", "cli", *base, "--out", str(out)]
        process = subprocess.Popen(
            command,
            cwd=work,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # the kill reaches the worker processes too
        )
        time.sleep(delay)
        killed = process.poll() is None
        if killed:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        after_kill = sorted(p.name for p in out.iterdir()) if out.exists() else []
        resumed = ser([*base, "--out", str(out)], work)
        tables = read_tables(out)
        identical = (
            resumed["rc"] == 0
            and tables.keys() == expected.keys()
            and all(tables[name].equals(expected[name]) for name in expected)
        )
        same_bytes = identical and all((out / n).read_bytes() == expected_bytes[n] for n in expected)
        leftovers = sorted(p.name for p in out.iterdir() if p.name not in expected)
        trials.append(
            {
                "delay_s": round(delay, 2),
                "killed": killed,
                "after_kill": after_kill,
                "identical": identical,
                "same_bytes": same_bytes,
                "leftovers": leftovers,
            }
        )
    return {"reference_s": round(reference["seconds"], 1), "trials": trials}


TRAIN_TIMING_KEYS = ("seconds", "train_seconds")  # wall times: the only part of train.json that may differ


def tiny_train_params() -> dict:
    """params.yaml shrunk for a 4-actor corpus: rf, logreg and a small CNN, 4 folds, one protocol."""
    from components.settings import load_params

    params = load_params(PARAMS)
    params["train"].update(models=["rf", "logreg", "cnn"], profile="full", n_workers=2, retries=0)
    params["evaluate"].update(runs=[{"protocol": "actor-kfold", "subset": "all"}], n_folds=4, n_val_actors=1)
    for name in ("rf", "logreg"):
        params[name]["features"] = ["handmade"]
    params["rf"]["n_estimators"] = 50
    params["cnn"].update(epochs=3, n_filters=16)
    return params


def train_workspace(folder: Path, n_actors: int = 4) -> Path:
    """A project folder the ``train`` stage runs in (as ``dvc repro`` runs it): a demo corpus
    validated and featurized, a small ``params.yaml``, and an MLflow store whose registry already
    has a ``champion`` (a placeholder version scored 0 on the same data and protocol, so every
    finished run promotes its model and a killed one must not)."""
    import yaml
    from mlflow import MlflowClient

    from components.data.discover import discover
    from components.data.metadata import build_metadata
    from components.data.synth import write_corpus
    from components.features.featurize import featurize
    from components.features.sets import extract_params
    from components.registry.promote import CHAMPION

    params = tiny_train_params()
    write_corpus(folder / "data" / "raw", n_actors=n_actors, seed=0, n_jobs=2)
    clips, _ = build_metadata(discover(folder / "data" / "raw"), silence_dbfs=-60.0)
    (folder / "data" / "metadata").mkdir(parents=True)
    clips.to_parquet(folder / "data" / "metadata" / "clips.parquet")
    extract = extract_params(params["preprocess"], params["featurize"])
    featurize(clips, folder / "data" / "features", ["handmade", "logmel"], extract, n_jobs=2, progress=False)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    hashes = clips.sort_values("clip_id")["content_hash"]
    version = "clips:" + hashlib.sha256("".join(hashes).encode()).hexdigest()[:16]  # flows.train.data_version
    (folder / "mlflow").mkdir()
    client = MlflowClient(f"sqlite:///{folder / 'mlflow' / 'mlflow.db'}")
    name = params["tracking"]["model_name"]
    client.create_registered_model(name)
    tags = {"data_version": version, "protocol": "actor-kfold", "subset": "all", "primary_metric": "uar"}
    tags |= {"primary_metric_value": "0.0", "model_kind": "placeholder"}
    seed = client.create_model_version(name, (folder / "placeholder").as_uri(), tags=tags)
    client.set_registered_model_alias(name, CHAMPION, seed.version)
    return folder


def stage_env(root: Path) -> dict[str, str]:
    """The environment of a stage command: this checkout importable, a private Prefect home, offline."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
    env |= {"PYTHONPATH": str(ROOT), "PREFECT_HOME": str(root / "prefect-home"), "HF_HUB_OFFLINE": "1"}
    return env | {
        "TRANSFORMERS_OFFLINE": "1",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def run_stage(stage: str, folder: Path, env: dict[str, str], timeout: float = 1200) -> dict:
    """``python -m flows.STAGE`` in ``folder`` (dvc.yaml's command), to completion."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", f"flows.{stage}"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return {
        "rc": done.returncode,
        "output": done.stdout + done.stderr,
        "seconds": time.perf_counter() - start,
    }


def start_stage(stage: str, folder: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """``python -m flows.STAGE`` in ``folder``, in the background, in its own process group."""
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", f"flows.{stage}"],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the kill reaches the Prefect server and the worker processes too
        )


def kill_group(process: subprocess.Popen) -> bool:
    """SIGKILL a process and everything it started; whether it was still running."""
    alive = process.poll() is None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return alive


def without_timings(value):
    """``value`` with wall-time entries removed (they differ between any two runs)."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TRAIN_TIMING_KEYS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def registry_state(folder: Path) -> dict:
    """Aliases, versions and runs left in a workspace's MLflow store."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow' / 'mlflow.db'}")
    name = tiny_train_params()["tracking"]["model_name"]
    versions = client.search_model_versions(f"name='{name}'")
    aliases = {alias: str(v) for alias, v in client.get_registered_model(name).aliases.items()}
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, max_results=5000) if experiments else []
    models = client.search_logged_models(experiment_ids=experiments) if experiments else []
    return {
        "aliases": aliases,
        "versions": sorted(int(v.version) for v in versions),
        "running": sum(r.info.status == "RUNNING" for r in runs),
        "pending_models": sum(str(m.status).endswith("PENDING") for m in models),
    }


def champion_predictions(folder: Path, clips: list[Path]) -> np.ndarray:
    """Probabilities the workspace's ``champion`` gives some clips, loaded as ``ser predict`` loads it
    (path inputs on: a served model refuses them)."""
    import mlflow

    name = tiny_train_params()["tracking"]["model_name"]
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow' / 'mlflow.db'}")
    try:
        model = mlflow.pyfunc.load_model(f"models:/{name}@champion", model_config={"allow_paths": True})
        table = model.predict(pd.DataFrame({"path": [str(c) for c in clips]}))
    finally:
        mlflow.set_tracking_uri(None)
    return table[[c for c in table.columns if c.startswith("prob_")]].to_numpy()


def loadable_versions(folder: Path, skip: set[int]) -> tuple[int, int]:
    """``(loadable, registered)`` over the registered versions not in ``skip``: no version may point
    at a partly written model."""
    import mlflow

    name = tiny_train_params()["tracking"]["model_name"]
    versions = [v for v in registry_state(folder)["versions"] if v not in skip]
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow' / 'mlflow.db'}")
    loaded = 0
    try:
        for version in versions:
            with contextlib.suppress(Exception):
                mlflow.pyfunc.load_model(f"models:/{name}/{version}")
                loaded += 1
    finally:
        mlflow.set_tracking_uri(None)
    return loaded, len(versions)


def stray_files(folder: Path) -> list[str]:
    """Temporary or lock files left in the stage's output folders."""
    found = []
    for sub in ("metrics", "plots", "data"):
        for path in (folder / sub).glob("**/.*"):
            if path.is_file():
                found.append(os.path.relpath(path, folder))
    return sorted(found)


TRAIN_PHASES = (  # (name, log line that starts it, most seconds to wait after the line)
    ("training", "Beginning flow run", 20.0),
    ("refit and publish", "trained ", 8.0),
)


def wait_for_line(log: Path, marker: str, process: subprocess.Popen, timeout: float = 900) -> None:
    """Wait until ``marker`` appears in a running process's log (or it ends)."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if marker in log.read_text(errors="replace"):
            return
        time.sleep(0.05)


def train_kill_and_resume(root: Path, n_trials: int, seed: int) -> dict:
    """SIGKILL ``python -m flows.train`` at random times, re-run it, compare with an uninterrupted run.

    Identical: the re-run's ``metrics/train.json`` (wall times aside) and ``plots/confusion.csv``
    equal the uninterrupted run's, and its ``champion`` gives the same probabilities, bit for bit.
    """
    import shutil

    base = train_workspace(root / "train-base")
    env = stage_env(root)
    reference_dir = root / "train-reference"
    shutil.copytree(base, reference_dir)
    reference = run_stage("train", reference_dir, env)
    if reference["rc"] != 0:
        raise RuntimeError(f"uninterrupted train failed:\n{reference['output'][-3000:]}")
    expected = without_timings(json.loads((reference_dir / "metrics" / "train.json").read_text()))
    expected_plot = (reference_dir / "plots" / "confusion.csv").read_bytes()
    clips = sorted((base / "data" / "raw").rglob("*.wav"))[::40]
    expected_proba = champion_predictions(reference_dir, clips)
    seed_version = int(registry_state(base)["aliases"]["champion"])
    rng = random.Random(seed)
    trials = []
    for index in range(n_trials):
        folder = root / f"train-trial-{index}"
        shutil.copytree(base, folder)
        # Even trials die while models train, odd ones while the best is refit, logged and registered.
        phase = TRAIN_PHASES[index % len(TRAIN_PHASES)]
        log = root / f"train-trial-{index}.log"
        process = start_stage("train", folder, env, log)
        started = time.perf_counter()
        wait_for_line(log, phase[1], process)
        time.sleep(rng.uniform(0.0, phase[2]))
        delay = time.perf_counter() - started
        killed = kill_group(process)
        after_kill = registry_state(folder)
        resumed = run_stage("train", folder, env)
        metrics_path = folder / "metrics" / "train.json"
        got = without_timings(json.loads(metrics_path.read_text())) if metrics_path.exists() else None
        same_metrics = (
            got is not None and got["results"] == expected["results"] and got["best"] == expected["best"]
        )
        same_plot = (folder / "plots" / "confusion.csv").read_bytes() == expected_plot
        proba = champion_predictions(folder, clips) if resumed["rc"] == 0 else None
        same_model = proba is not None and np.array_equal(proba, expected_proba)
        loaded, registered = loadable_versions(folder, {seed_version})
        final = registry_state(folder)
        trials.append(
            {
                "delay_s": round(delay, 1),
                "phase": phase[0],
                "killed": killed,
                "champion_after_kill": after_kill["aliases"].get("champion"),
                "champion_kept": after_kill["aliases"].get("champion") == str(seed_version),
                "versions_after_kill": len(after_kill["versions"]) - 1,
                "resumed_rc": resumed["rc"],
                "same_metrics": same_metrics,
                "same_plot": same_plot,
                "same_model": same_model,
                "identical": resumed["rc"] == 0 and same_metrics and same_plot and same_model,
                "champion_final": final["aliases"].get("champion"),
                "previous_final": final["aliases"].get("previous"),
                "loadable": f"{loaded}/{registered}",
                "runs_left_running": final["running"],
                "models_left_pending": final["pending_models"],
                "stray_files": stray_files(folder),
            }
        )
    return {"reference_s": round(reference["seconds"], 1), "trials": trials}


FINETUNE_OVERRIDES = {"max_dur": 0.5, "lr": 1e-3, "eval_batch_size": 8, "patience": 5}  # tests' tiny run


def finetune_workspace(folder: Path, corpus: Path) -> Path:
    """A project folder for ``python -m flows.wav2vec2`` in fine-tuning mode on CPU: a tiny randomly
    initialised wav2vec2 (nothing downloaded), one speech take per emotion and actor of ``corpus``
    (32 clips of 4 actors) as the waveform table, 4 actor folds and a refit, 3 epochs each."""
    import yaml
    from mlflow import MlflowClient

    from components.data.discover import discover
    from components.data.metadata import build_metadata
    from components.features.featurize import featurize
    from components.features.sets import extract_params
    from components.settings import load_params
    from components.wav2vec2.pretrained import save_tiny_checkpoint

    params = load_params(PARAMS)
    clips, _ = build_metadata(discover(corpus), silence_dbfs=-60.0)
    first = (clips["vocal_channel"] == 1) & (clips["intensity"] == 1)
    chosen = clips[first & (clips["statement"] == 1) & (clips["repetition"] == 1)]
    extract = extract_params(params["preprocess"], params["featurize"])
    featurize(chosen, folder / "data" / "features", ["waveform"], extract, n_jobs=1, progress=False)
    tiny = save_tiny_checkpoint(folder / "tiny-wav2vec2", n_layers=2, hidden_size=32)
    params["wav2vec2"].update(pretrained=str(tiny), mode="finetune", device="cpu", epochs=3, batch_size=4)
    params["wav2vec2"]["overrides"] = FINETUNE_OVERRIDES
    params["evaluate"].update(runs=[{"protocol": "actor-kfold", "subset": "all"}], n_folds=4, n_val_actors=1)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (folder / "mlflow").mkdir()
    MlflowClient(f"sqlite:///{folder / 'mlflow' / 'mlflow.db'}").search_experiments()  # migrated once
    return folder


def checkpoint_events(folder: Path, seen: set) -> int:
    """New ``last.pt`` writes since ``seen`` (each write replaces the file: a new inode and mtime)."""
    new = 0
    for path in (folder / "data" / "checkpoints" / "wav2vec2").glob("*/last.pt"):
        with contextlib.suppress(FileNotFoundError):
            stat = path.stat()
            key = (str(path), stat.st_ino, stat.st_mtime_ns)
            if key not in seen:
                seen.add(key)
                new += 1
    return new


def checkpoint_weights(folder: Path) -> dict[str, dict]:
    """Every fold's final weights (``last.pt``) and best-epoch weights (``best.pt``)."""
    import torch

    weights = {}
    for path in sorted((folder / "data" / "checkpoints" / "wav2vec2").glob("*/*.pt")):
        weights[f"{path.parent.name}/{path.name}"] = torch.load(path, map_location="cpu", weights_only=True)[
            "model"
        ]
    return weights


def same_weights(left: dict[str, dict], right: dict[str, dict]) -> bool:
    """Whether two :func:`checkpoint_weights` hold the same tensors, bit for bit."""
    import torch

    return left.keys() == right.keys() and all(
        left[fold].keys() == right[fold].keys()
        and all(torch.equal(left[fold][name], right[fold][name]) for name in left[fold])
        for fold in left
    )


def finetune_kill_and_resume(root: Path, corpus: Path, n_trials: int, seed: int) -> dict:
    """SIGKILL ``python -m flows.wav2vec2`` (fine-tuning on CPU) right after its k-th checkpoint
    write, re-run it, and compare with an uninterrupted run.

    Identical: the same results table (test metrics of every fold), the same best epoch of every
    fold, and bit-identical weights in every fold's ``last.pt`` (after the last epoch) and ``best.pt``.
    """
    import shutil

    base = finetune_workspace(root / "finetune-base", corpus)
    env = stage_env(root)
    reference_dir = root / "finetune-reference"
    shutil.copytree(base, reference_dir)
    reference = run_stage("wav2vec2", reference_dir, env)
    if reference["rc"] != 0:
        raise RuntimeError(f"uninterrupted fine-tuning failed:\n{reference['output'][-3000:]}")
    expected = without_timings(json.loads((reference_dir / "metrics" / "wav2vec2.json").read_text()))
    expected_weights = checkpoint_weights(reference_dir)
    n_events = len(expected["finetune"]["folds"]) * 3  # 3 epochs a fold
    rng = random.Random(seed)
    trials = []
    for index in range(n_trials):
        folder = root / f"finetune-trial-{index}"
        shutil.copytree(base, folder)
        target = rng.randint(1, n_events - 1)
        process = start_stage("wav2vec2", folder, env, root / f"finetune-trial-{index}.log")
        seen: set = set()
        written, started = 0, time.perf_counter()
        while written < target and process.poll() is None and time.perf_counter() - started < 900:
            written += checkpoint_events(folder, seen)
            time.sleep(0.02)
        killed = kill_group(process)
        epochs_saved = {
            path.parent.name: int(torch_load_epoch(path))
            for path in (folder / "data" / "checkpoints" / "wav2vec2").glob("*/last.pt")
        }
        resumed = run_stage("wav2vec2", folder, env)
        metrics_path = folder / "metrics" / "wav2vec2.json"
        got = without_timings(json.loads(metrics_path.read_text())) if metrics_path.exists() else {}
        folds = {f["fold"]: f for f in got.get("finetune", {}).get("folds", [])}
        resumed_at = {
            name: f["resumed_from"] for name, f in folds.items() if 0 < f["resumed_from"] < f["epochs_run"]
        }
        same_results = got.get("results") == expected["results"]
        same_epochs = [
            (f["fold"], f["best_epoch"], f["epochs_run"]) for f in expected["finetune"]["folds"]
        ] == [(name, f["best_epoch"], f["epochs_run"]) for name, f in folds.items()]
        weights = same_weights(checkpoint_weights(folder), expected_weights)
        trials.append(
            {
                "after_checkpoint": target,
                "killed": killed,
                "epochs_saved": epochs_saved,
                "resumed_at": resumed_at,
                "finished_before": sorted(
                    n for n, f in folds.items() if f["resumed_from"] == f["epochs_run"]
                ),
                "resumed_rc": resumed["rc"],
                "same_results": same_results,
                "same_epochs": same_epochs,
                "same_weights": weights,
                "identical": resumed["rc"] == 0 and same_results and same_epochs and weights,
            }
        )
    return {"reference_s": round(reference["seconds"], 1), "n_checkpoints": n_events, "trials": trials}


def torch_load_epoch(path: Path) -> int:
    """The epochs a ``last.pt`` had completed (-1 when unreadable)."""
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except Exception:
        return -1


def run_together(commands: list[tuple[list[str], Path, dict[str, str]]], timeout: float = 1800) -> list[dict]:
    """Start every command at once; each one's exit status, output and wall time."""
    processes = []
    for index, (command, cwd, env) in enumerate(commands):
        log = cwd.parent / f".together-{cwd.name}-{index}.log"
        with log.open("w") as out:
            processes.append(
                (subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT), log)
            )
    started, ended = time.perf_counter(), {}
    while len(ended) < len(processes):
        for index, (process, _) in enumerate(processes):
            if index not in ended and process.poll() is not None:
                ended[index] = time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            for index, (process, _) in enumerate(processes):
                if index not in ended:
                    process.kill()
                    process.wait()
                    ended[index] = timeout
        time.sleep(0.05)
    results = []
    for index, (process, log) in enumerate(processes):
        results.append(
            {"rc": process.returncode, "output": log.read_text(), "seconds": round(ended[index], 1)}
        )
        log.unlink()
    return results


def message_line(output: str) -> str:
    """What a refused run said: its ``error: ...`` line (DVC's ``ERROR: ...`` with the lines naming
    the blocking process)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if line.lower().startswith("error"):
            return " ".join(lines[index : index + (2 if line.endswith(":") else 1)])
    return lines[-1] if lines else ""


def sqlite_integrity(path: Path) -> str:
    """``PRAGMA integrity_check`` of a SQLite file (``ok`` when sound)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as connection:
        return ";".join(row[0] for row in connection.execute("PRAGMA integrity_check"))


def outcome(runs: list[dict]) -> dict:
    """Which of two runs started together finished, and what the other said."""
    finished = [r for r in runs if r["rc"] == 0]
    refused = [r for r in runs if r["rc"] != 0]
    return {
        "rcs": [r["rc"] for r in runs],
        "seconds": [r["seconds"] for r in runs],
        "one_finished": len(finished) == 1,
        "message": message_line(refused[0]["output"]) if refused else "(both finished)",
        "refused_after_s": refused[0]["seconds"] if refused else None,
        "traceback": any("Traceback" in r["output"] for r in runs),
    }


def concurrent_featurize(data: Path, root: Path, sets: str) -> dict:
    """Two ``ser featurize DATA --out OUT`` at once; the survivor's tables against a single run's."""
    out = root / "features" / "concurrent"
    base = [
        "featurize",
        str(data),
        "--sets",
        sets,
        "--n-jobs",
        "2",
        "--params",
        str(PARAMS),
        "--out",
        str(out),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "cli", *base]
    runs = run_together([(command, root / "work", env), (command, root / "work", env)])
    expected = read_tables(root / "features" / "reference")
    tables = read_tables(out)
    same = tables.keys() == expected.keys() and all(tables[n].equals(expected[n]) for n in expected)
    return {
        **outcome(runs),
        "identical": same,
        "leftovers": sorted(p.name for p in out.iterdir() if p.name not in expected),
    }


def concurrent_train(root: Path) -> dict:
    """Two ``python -m flows.train`` at once in one workspace; the survivor against the single run."""
    import shutil

    folder = root / "train-concurrent"
    shutil.copytree(root / "train-base", folder)
    env = stage_env(root)
    command = [sys.executable, "-m", "flows.train"]
    runs = run_together([(command, folder, env), (command, folder, env)])
    expected = without_timings(json.loads((root / "train-reference" / "metrics" / "train.json").read_text()))
    got = without_timings(json.loads((folder / "metrics" / "train.json").read_text()))
    state = registry_state(folder)
    return {
        **outcome(runs),
        "identical": all(got[k] == expected[k] for k in ("results", "best")),
        "integrity": sqlite_integrity(folder / "mlflow" / "mlflow.db"),
        "versions": len(state["versions"]) - 1,
        "champion": state["aliases"].get("champion"),
        "stray_files": stray_files(folder),
    }


def concurrent_dvc_repro(root: Path) -> dict:
    """Two ``dvc repro train`` at once on a fresh clone of this repository (a 4-actor demo corpus,
    small models); then ``dvc status``, ``dvc data status`` and the MLflow store's integrity."""
    import yaml

    clone = root / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    params = tiny_train_params()
    params["ingest"]["demo_actors"] = 4
    params["featurize"]["feature_sets"] = ["handmade", "logmel"]
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {k: v for k, v in stage_env(root).items() if k != "PYTHONPATH"}  # the clone's own code
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    dvc = [str(Path(sys.executable).parent / "dvc")]
    runs = run_together([([*dvc, "repro", "train"], clone, env), ([*dvc, "repro", "train"], clone, env)])

    def dvc_says(*args: str) -> str:
        done = subprocess.run([*dvc, *args], cwd=clone, env=env, capture_output=True, text=True, timeout=600)
        return " ".join((done.stdout + done.stderr).split()) or f"(no output, exit {done.returncode})"

    store = clone / "mlflow" / "mlflow.db"
    data_status = dvc_says("data", "status")
    again = dvc_says("repro", "train")
    return {
        **outcome(runs),
        "status": dvc_says("status", "train"),  # ingest is always_changed: it is listed by design
        "data_status": data_status,
        "workspace_matches_cache": "uncommitted" not in data_status and "not in cache" not in data_status,
        "integrity": sqlite_integrity(store) if store.exists() else "no store",
        "skipped_again": re.findall(r"Stage '(\w+)' didn't change, skipping", again),
    }


def demo_outcomes(cases: list[Case], uri: str) -> dict[str, dict]:
    """Upload each bad file to the web demo (``app/demo.py`` run in-process by Streamlit's AppTest)."""
    from streamlit.testing.v1 import AppTest

    cwd, before = Path.cwd(), os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.chdir(ROOT)  # the page reads params.yaml from the project root, as `make app` runs it
    outcomes = {}
    try:
        app = AppTest.from_file(str(ROOT / "app" / "demo.py"), default_timeout=600).run()
        for case in cases:
            app.file_uploader[0].set_value((case.path.name, case.path.read_bytes(), "audio/wav")).run()
            errors = [e.value for e in app.error]
            labels = [h.value for h in app.subheader if h.value.startswith("Predicted emotion: ")]
            if app.exception:
                text = f"crash: {app.exception[0].value}"
            elif errors:
                text = "error: " + errors[0].removeprefix(f"{case.path.name}: ")
            else:
                text = labels[0].removeprefix("Predicted emotion: ") if labels else "nothing shown"
            clear = not app.exception and (
                (len(errors) == 1 and "\n" not in errors[0] and case.expect != "accept")
                or (labels and not errors)
            )
            outcomes[case.name] = {"text": text, "clear": bool(clear), "crash": bool(app.exception)}
    finally:
        os.chdir(cwd)
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before
    return outcomes


def read_only_prefix(folder: Path) -> tuple[str, ...]:
    """A command prefix that runs the command with ``folder`` read-only.

    chmod 0555 stops a normal user; root writes through it, so as root the command runs in a
    private mount namespace where ``folder`` is bind-mounted read-only.
    """
    if os.geteuid() != 0:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(path.stat().st_mode & 0o555)
        return ()
    return ("unshare", "--mount", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(folder))


def error_lines(output: str) -> tuple[str, bool]:
    """The first ``error:`` line of a command's output, and whether it is its only line of error."""
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    one_line = len(errors) == 1 and "Traceback" not in output
    return (errors[0] if errors else (output.strip().splitlines() or [""])[-1]), one_line


def interrupt_predict(data: Path, work: Path, env: dict[str, str]) -> dict:
    """``ser predict`` of a folder, SIGINT (as Ctrl-C) to its process group once it has scored 10 clips."""
    log = work / "ctrl-c.log"
    command = [sys.executable, "-m", "cli", "predict", str(data), "--params", str(PARAMS)]
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            command,
            cwd=work,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    pattern = re.compile(r"predict:\s+\d+%\|[^|]*\|\s*(\d+)/")
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        if any(int(n) >= 10 for n in pattern.findall(log.read_text(errors="replace"))):
            break
        time.sleep(0.05)
    started = process.poll() is None
    sent = time.monotonic()
    if started:
        os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    elapsed = time.monotonic() - sent
    output = log.read_text(errors="replace")
    return {"rc": process.returncode, "output": output, "started": started, "seconds": elapsed}


def cli_cases(root: Path, uri: str, data: Path) -> list[dict]:
    """Command-line mistakes and failures (issue 20), each a fresh ``ser`` process.

    An unwritable output folder, broken settings, a tracking server that is down, a read-only
    MLflow store, Ctrl-C, and (in-process, as the REST server decodes a row) a waveform whose
    rate is 10^12 Hz. Everything is built under ``work/cli``.
    """
    import yaml

    from components.data.clip_checks import ClipLimits
    from components.errors import SerError
    from components.serving.pyfunc import decode_row
    from components.settings import load_params

    work = root / "work" / "cli"
    work.mkdir(parents=True, exist_ok=True)
    clip = next(p for p in sorted(data.rglob("*.wav")) if p.parent.name.startswith("Actor_"))  # a good one
    store = root / "mlflow"
    rows = []

    def add(name: str, command: str, run: dict, expect_rc: int, words: tuple[str, ...], extra: bool = True):
        text, one_line = error_lines(run["output"])
        if expect_rc == 0:  # a run that succeeds: no error line expected
            one_line = "Traceback" not in run["output"]
        handled = run["rc"] == expect_rc and all(w in text for w in words) and extra
        crash = run["rc"] is None or "Traceback" in run["output"]
        text = f"exit {run['rc']}: {text}"
        rows.append({"case": name, "command": command, "outcome": text, "one_line": one_line,
                     "clear": handled and one_line, "crash": crash})  # fmt: skip

    read_only = work / "read-only"
    read_only.mkdir()
    prefix = read_only_prefix(read_only)
    for name, args, option in (
        ("unwritable output folder", ["validate", str(data), "--out", str(read_only / "report")], "--out"),
        ("unwritable output folder", ["predict", str(clip), "--json", str(read_only / "out.json")], "--json"),
    ):
        run = ser([*args, "--params", str(PARAMS)], work, {"MLFLOW_TRACKING_URI": uri}, prefix=prefix)
        words = (option, str(read_only), "cannot write")
        add(name, f"`ser {args[0]} {option} READ-ONLY/…`", run, 1, words, "rejected" not in run["output"])

    def change(section: str, key: str, value) -> callable:
        return lambda s: s[section].update({key: value})

    def misspell(s: dict) -> None:
        s["validate"]["max_rejected_shar"] = s["validate"].pop("max_rejected_share")

    for name, edit, words in (
        ("settings: a missing section", lambda s: s.pop("featurize"), ("missing section 'featurize'",)),
        ("settings: a misspelled key", misspell, ("unknown key validate.max_rejected_shar",)),
        ("settings: text for a number", change("preprocess", "clip_dur", "four"), ("preprocess.clip_dur",)),
        ("settings: negative clip length", change("preprocess", "clip_dur", -1.0), ("preprocess.clip_dur",)),
    ):
        settings = load_params(PARAMS)
        edit(settings)
        params = work / f"params-{len(rows)}.yaml"
        params.write_text(yaml.safe_dump(settings, sort_keys=False))
        out = work / f"features-{len(rows)}"
        run = ser(["featurize", str(data), "--out", str(out), "--params", str(params)], work)
        add(name, "`ser featurize DATA --params BAD.yaml`", run, 1, (str(params), *words), not out.exists())

    with contextlib.closing(__import__("socket").socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # released below: nothing listens on it
    down = f"http://127.0.0.1:{port}"
    run = ser(["predict", str(clip), "--params", str(PARAMS)], work, {"MLFLOW_TRACKING_URI": down})
    add("tracking server down (closed port)", "`ser predict CLIP`", run, 1, (down, "does not answer"))

    def snapshot() -> dict:
        return {
            str(p): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else b"") for p in store.rglob("*")
        }

    before = snapshot()
    scored = work / "read-only-store.json"
    run = ser(
        ["predict", str(clip), "--json", str(scored), "--params", str(PARAMS)], work,
        {"MLFLOW_TRACKING_URI": uri}, prefix=read_only_prefix(store),
    )  # fmt: skip
    after = snapshot()
    (result,) = json.loads(scored.read_text())["files"] if scored.exists() else [{"label": None}]
    if os.geteuid() != 0:
        for path in [store, *store.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    unchanged = before == after
    add("read-only MLflow store", "`ser predict CLIP`", run, 0, (), unchanged and result["label"] is not None)
    label = f"{result['label']} ({result['confidence']:.2f})" if result["label"] else "no label"
    rows[-1]["outcome"] = f"exit {run['rc']}: {label}; store {'unchanged' if unchanged else 'CHANGED'}"

    run = interrupt_predict(data, work, {"MLFLOW_TRACKING_URI": uri})
    within = run["seconds"] < 3.0
    add("Ctrl-C (SIGINT to the process group)", "`ser predict DATA`", run, 130, ("interrupted",),
        run["started"] and within)  # fmt: skip
    rows[-1]["outcome"] += f", {run['seconds']:.2f} s after SIGINT"

    limits = ClipLimits.from_mapping(load_params(PARAMS)["validate"])
    row = {"waveform": _tone(1.0, 16_000).tolist(), "sampling_rate": 10**12}
    try:
        decode_row(row, allow_paths=False, max_dur=30.0, checks=limits)
        message, one_line = "accepted", False
    except SerError as err:
        message, one_line = str(err), "\n" not in str(err)
    rows.append({"case": "REST row: waveform at 10^12 Hz", "command": "`decode_row` (the REST server's)",
                 "outcome": f"refused: {message}", "one_line": one_line,
                 "clear": one_line and "sampling rate" in message, "crash": False})  # fmt: skip
    return rows


def run_trial(
    root: Path,
    n_trials: int = 3,
    seed: int = 0,
    sets: str = "handmade,logmel",
    train_trials: int = 3,
    finetune_trials: int = 3,
    concurrency: bool = True,
    only: str | None = None,
) -> dict:
    """Build every case under ``root``, run the commands on them, return what happened.

    ``only="bad-input"``: the bad-input and command-line cases alone (no kill-and-resume or
    concurrent runs).
    """
    from components.data.synth import write_corpus

    data, zips, out, work = root / "data", root / "zips", root / "out", root / "work"
    for folder in (out, work):
        folder.mkdir(parents=True, exist_ok=True)
    write_corpus(data / "good", n_actors=1, seed=0, n_jobs=2)
    good_clips = sorted((data / "good").rglob("*.wav"))
    uri = train_tiny_model(data / "good", root)
    cases = build_file_cases(
        data / "suspect", good_clip=good_clips[0]
    )  # sorts after good/: the copy is the 2nd
    # one bad file among the good ones: its share is under validate.max_rejected_share
    lone = Case(
        "one silent clip among 104 good ones", data / "good" / "extra" / "03-01-05-01-01-01-03.wav", "reject"
    )
    zip_cases = build_zip_cases(zips)
    raw_before = {**hash_tree(data), **hash_tree(zips)}
    tree_before = list_tree(root)

    runs = {"all": ser(["validate", str(data), "--out", str(out / "all"), "--params", str(PARAMS)], work)}
    silent = _wav_bytes(np.zeros(48_000, np.float32))
    lone.path.parent.mkdir()
    lone.path.write_bytes(silent)
    raw_before[str(lone.path)] = hashlib.sha256(silent).hexdigest()
    tree_before |= {os.path.relpath(lone.path, root), os.path.relpath(lone.path.parent, root)}
    runs["good"] = ser(
        ["validate", str(data / "good"), "--out", str(out / "good"), "--params", str(PARAMS)], work
    )
    import pandas as pd

    rejected = dict(
        pd.read_csv(out / "all" / "rejected.csv", keep_default_na=False)[["location", "reason"]].values
    )
    accepted = set(pd.read_parquet(out / "all" / "clips.parquet")["location"])
    rows = []
    predict_inputs = [case for case in cases if case.kind == "file"] + [cases[-1]] + zip_cases
    env = {"MLFLOW_TRACKING_URI": uri}
    predicted = ser(
        [
            "predict",
            *(str(c.path) for c in predict_inputs),
            "--json",
            str(out / "predict.json"),
            "--params",
            str(PARAMS),
        ],
        work,
        env,
        timeout=600,
    )
    results = {}
    if (out / "predict.json").exists():
        document = json.loads((out / "predict.json").read_text())
        results = {item["file"]: item for item in document["files"]}
    for case in cases + zip_cases:
        run = runs["all"]
        if case.kind == "zip":
            run = runs[case.name] = ser(
                ["validate", str(case.path), "--params", str(PARAMS)], work, timeout=600
            )
        text, handled = validate_outcome(case, run, rejected, accepted)
        result = results.get(str(case.path))
        pred = predict_outcome(case, result, predicted)
        crash = any(r["rc"] is None or "Traceback" in r["output"] for r in (run, predicted))
        rows.append({"case": case.name, "validate": text, "predict": pred, "clear": handled, "crash": crash})
    good = runs["good"]
    lone_ok = good["rc"] == 0 and str(lone.path) in good["output"] and "silent" in good["output"]
    rows.append(
        {
            "case": lone.name,
            "validate": f"exit {good['rc']}: " + (good["output"].strip().splitlines() or [""])[-1][:200],
            "predict": "–",
            "clear": lone_ok,
            "crash": "Traceback" in good["output"],
        }
    )
    # uploads are a regular file's bytes, of the types the page's upload widget offers (wav, flac, ogg)
    uploadable = [c for c in cases if c.kind == "file" and c.path.is_file() and c.path.suffix != ".mp3"]
    demo = demo_outcomes(uploadable, uri)
    for row in rows:
        found = demo.get(row["case"])
        row["demo"] = found["text"] if found else "–"
        row["clear"] = row["clear"] and (found is None or found["clear"])
        row["crash"] = row["crash"] or bool(found and found["crash"])
    raw_after = {**hash_tree(data), **hash_tree(zips)}
    changed = sorted(p for p in raw_before if raw_after.get(p) != raw_before[p])
    new = sorted(p for p in list_tree(root) - tree_before if p.split(os.sep)[0] not in OUTPUT_DIRS)
    cli = cli_cases(root, uri, data / "good")
    bad_input = {
        "rows": rows,
        "cli_rows": cli,
        "validate_all": {k: runs["all"][k] for k in ("rc", "seconds")},
        "validate_all_tail": runs["all"]["output"].strip().splitlines()[-1],
        "predict_rc": predicted["rc"],
        "raw_files": len(raw_before),
        "raw_changed": changed,
        "written_outside": new,
    }
    if only == "bad-input":
        return bad_input
    resume = kill_and_resume(data / "good", root, n_trials, seed, sets)
    train = train_kill_and_resume(root, train_trials, seed) if train_trials or concurrency else None
    corpus = root / "train-base" / "data" / "raw"
    finetune = finetune_kill_and_resume(root, corpus, finetune_trials, seed) if finetune_trials else None
    concurrent = None
    if concurrency:
        concurrent = {
            "featurize": concurrent_featurize(data / "good", root, sets),
            "train": concurrent_train(root),
            "dvc repro": concurrent_dvc_repro(root),
        }
    return {
        **bad_input,
        "train_resume": train,
        "finetune_resume": finetune,
        "concurrent": concurrent,
        "resume": resume,
    }


def format_report(trial: dict) -> str:
    """The Markdown report."""
    rows = trial["rows"]
    yes = lambda flag: "yes" if flag else "no"  # noqa: E731
    clear = sum(r["clear"] for r in rows)
    crashes = sum(r["crash"] for r in rows)
    cell = lambda text: str(text).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    cli = trial.get("cli_rows", [])
    crashes += sum(r["crash"] for r in cli)
    resumes = {"featurize": trial["resume"]["trials"]} if trial.get("resume") else {}
    for key, name in (("train_resume", "train"), ("finetune_resume", "fine-tune")):
        if trial.get(key):
            resumes[name] = trial[key]["trials"]
    identical = ", ".join(
        f"{name} {sum(t['identical'] for t in ts)}/{len(ts)}" for name, ts in resumes.items()
    )
    concurrent = trial.get("concurrent") or {}
    concurrency = ""
    if concurrent:
        good = sum(
            c["one_finished"] and c["identical"] if "identical" in c else c["one_finished"]
            for c in concurrent.values()
        )
        concurrency = (
            f", concurrent runs: {good}/{len(concurrent)} with one run finishing and the other refused"
        )
    lines = [
        "# Reliability: bad inputs, raw-data immutability, kill and resume, concurrent runs",
        "",
        "Produced by `python -m tests.reliability.trial` (its checks: `pytest -m slow tests/reliability`);",
        "every input is built in a temporary folder.",
        "Validate: one `ser validate DATA --out OUT` over a one-actor demo corpus (104 good clips) plus",
        "every bad file under `DATA/suspect/` (zips validated one by one). Predict: one `ser predict` of",
        "every bad input with a logistic regression registered in a temporary MLflow store. Web demo:",
        "each bad file uploaded to `app/demo.py` (run by Streamlit's AppTest) with the same model.",
        "Clear message: the expected outcome (rejected with a specific reason naming the file, or",
        "accepted for valid formats), no traceback.",
        "",
        f"**Summary: {clear}/{len(rows)} bad-input cases and {sum(r['clear'] for r in cli)}/{len(cli)} "
        f"command-line cases handled with a clear message, {crashes} crashes, "
        f"{len(trial['raw_changed'])} of {trial['raw_files']} raw files changed, "
        f"{len(trial['written_outside'])} paths written outside the output folders"
        + (f", kill-and-resume identical: {identical}{concurrency}.**" if resumes else ".**"),
        "",
        "| case | what happened (validate) | what happened (predict) | what happened (web demo) "
        "| clear message | crash |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {cell(r['case'])} | {cell(r['validate'])} | {cell(r['predict'])} "
            f"| {cell(r.get('demo', '–'))} | {yes(r['clear'])} | {yes(r['crash'])} |"
        )
    lines += [
        "",
        f"`ser validate` over all files: exit {trial['validate_all']['rc']} in "
        f"{trial['validate_all']['seconds']:.1f} s; last line: {cell(trial['validate_all_tail'])}",
        f"`ser predict` over all bad inputs: exit {trial['predict_rc']}. `ser predict`, the REST server and",
        "the web demo refuse what validate rejects per clip (rate, duration, silence, DC, clipping) with",
        "validate's message; the REST server and the web demo also refuse more than 30 s or 10 MB a clip,",
        "and `ser predict` windows long recordings.",
        f"Raw files changed: {trial['raw_changed'] or 'none'}. Written outside the output folders: "
        f"{trial['written_outside'] or 'nothing'}.",
        "Not regular files (the /dev/zero link, the FIFO, the dangling link) cannot be uploaded, and the",
        "page's upload widget offers .wav/.flac/.ogg only: no web demo column for them or the .mp3.",
        "The 10-minute 48 kHz file's peak memory (flat from 1 to 60 minutes) is measured in",
        "reports/memory.md. `ser validate` shows a name with a newline escaped (Python's ascii()), so its",
        "`rejected` line stays one line.",
        *format_cli_cases(cli, yes, cell),
    ]
    if not trial.get("resume"):
        return "\n".join(lines) + "\n"
    lines += [
        "",
        f"## Kill and resume: `ser featurize` (uninterrupted run {trial['resume']['reference_s']} s)",
        "",
        "| trial | SIGKILL after (s) | killed | files after the kill | resumed tables equal | same bytes "
        "| leftovers |",
        "|---|---|---|---|---|---|---|",
    ]
    for index, t in enumerate(trial["resume"]["trials"]):
        lines.append(
            f"| {index} | {t['delay_s']} | {yes(t['killed'])} | {', '.join(t['after_kill']) or '–'} | "
            f"{yes(t['identical'])} | {yes(t['same_bytes'])} | {', '.join(t['leftovers']) or 'none'} |"
        )
    if trial.get("train_resume"):
        lines += format_train_resume(trial["train_resume"], yes)
    if trial.get("finetune_resume"):
        lines += format_finetune_resume(trial["finetune_resume"], yes)
    if concurrent:
        lines += format_concurrent(concurrent, yes, cell)
    return "\n".join(lines) + "\n"


def format_cli_cases(cli: list[dict], yes, cell) -> list[str]:
    if not cli:
        return []
    lines = [
        "",
        "## Command-line cases",
        "",
        "Each a fresh `ser` process (the REST row in-process, as the server decodes a row). Read-only:",
        "the folder or store bind-mounted read-only in a private mount namespace (chmod for a non-root",
        "user). Broken settings: params.yaml with one change, given with `--params`; nothing may be",
        "written. Tracking server down: `MLFLOW_TRACKING_URI` at a closed local port. Read-only store:",
        "the clip scored and the store unchanged (every file's bytes and mtime). Ctrl-C: SIGINT to the",
        "process group once 10 of 104 clips are scored: exit 130 within 3 s. One line: exactly one",
        "`error:` line and no traceback (a run that succeeds: no traceback). The slow tests in",
        "tests/reliability/test_cli_outputs.py also interrupt validate, featurize and evaluate.",
        "",
        "| case | command | outcome | message is one line | clear message | crash |",
        "|---|---|---|---|---|---|",
    ]
    for r in cli:
        lines.append(
            f"| {cell(r['case'])} | {cell(r['command'])} | {cell(r['outcome'])} | {yes(r['one_line'])} "
            f"| {yes(r['clear'])} | {yes(r['crash'])} |"
        )
    return lines


def format_train_resume(result: dict, yes) -> list[str]:
    lines = [
        "",
        f"## Kill and resume: `python -m flows.train` (uninterrupted run {result['reference_s']} s)",
        "",
        "A 4-actor demo corpus (416 clips; rf, logreg and a small CNN, 4 actor folds, a refit), run as",
        "`dvc repro` runs the stage (`python -m flows.train` in the project folder), killed with SIGKILL",
        "(its process group: Prefect server and worker processes too) at a random time, then run again.",
        "Each trial starts from a store whose `champion` is a placeholder scored 0 on the same data, so a",
        "finished run always promotes its model. Identical: `metrics/train.json` (wall times aside) and",
        "`plots/confusion.csv` equal the uninterrupted run's, and the new champion gives bit-identical",
        "probabilities on 11 clips. Loadable: registered versions (the placeholder aside) that load.",
        "A killed run's MLflow runs stay RUNNING and a model it was logging stays PENDING (never",
        "registered, so no alias can reach it); MLflow cannot tell them from live ones.",
        "",
        "| trial | SIGKILL after (s), while | killed | champion after the kill "
        "| versions registered by the killed run | resumed: metrics / plot / model identical "
        "| champion, previous at the end | loadable "
        "| left in MLflow: runs RUNNING, logged models PENDING | stray files |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for index, t in enumerate(result["trials"]):
        kept = "placeholder (unchanged)" if t["champion_kept"] else f"v{t['champion_after_kill']}"
        same = f"{yes(t['same_metrics'])} / {yes(t['same_plot'])} / {yes(t['same_model'])}"
        lines.append(
            f"| {index} | {t['delay_s']}, {t['phase']} | {yes(t['killed'])} | {kept} "
            f"| {t['versions_after_kill']} | {same} "
            f"| v{t['champion_final']}, v{t['previous_final']} | {t['loadable']} "
            f"| {t['runs_left_running']}, {t['models_left_pending']} "
            f"| {', '.join(t['stray_files']) or 'none'} |"
        )
    return lines


def format_finetune_resume(result: dict, yes) -> list[str]:
    lines = [
        "",
        f"## Kill and resume: wav2vec2 fine-tuning (uninterrupted run {result['reference_s']} s)",
        "",
        "`python -m flows.wav2vec2` with `mode: finetune`, `device: cpu`, a tiny randomly initialised",
        "wav2vec2 (2 layers, nothing downloaded), 32 clips, 4 actor folds and the refit, 3 epochs each",
        f"({result['n_checkpoints']} checkpoint writes), killed with SIGKILL right after its k-th `last.pt`",
        "write, then run again. Resumed at: the folds the re-run continued and the epoch it continued",
        "from (`resumed_from`, also an MLflow metric of the fold run). Identical: the same results table,",
        "the same best epoch of every fold, and bit-identical weights in every fold's `last.pt` (after",
        "its last epoch) and `best.pt`. (The tiny random model stays near chance: the weights are the test.)",
        "",
        "| trial | killed after checkpoint | killed | epochs in `last.pt` at the kill | resumed at "
        "| results / best epochs / weights identical |",
        "|---|---|---|---|---|---|",
    ]
    for index, t in enumerate(result["trials"]):
        saved = ", ".join(f"{k}: {v}" for k, v in sorted(t["epochs_saved"].items())) or "–"
        resumed = (
            ", ".join(f"{k} from epoch {v}" for k, v in sorted(t["resumed_at"].items())) or "(between folds)"
        )
        same = f"{yes(t['same_results'])} / {yes(t['same_epochs'])} / {yes(t['same_weights'])}"
        lines.append(
            f"| {index} | {t['after_checkpoint']} | {yes(t['killed'])} | {saved} | {resumed} | {same} |"
        )
    return lines


def format_concurrent(concurrent: dict, yes, cell) -> list[str]:
    lines = [
        "",
        "## Concurrent runs",
        "",
        "Two runs of the same command started at the same moment on one workspace. The project's own",
        "entry points take a workspace lock (`components/runtime/locks.py`: `fcntl.flock` on a file beside",
        "the output,released by the kernel when the holder dies); `dvc repro` has DVC's lock. Identical: the",
        "survivor's outputs equal a single run's. Integrity: `PRAGMA integrity_check` of the MLflow store.",
        "",
        "| runs | exit codes | one finished | what the other printed | refused after (s) "
        "| survivor identical | store integrity | after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, c in concurrent.items():
        after = {
            "featurize": lambda c: f"leftovers: {', '.join(c['leftovers']) or 'none'}",
            "train": lambda c: (
                f"{c['versions']} version registered, champion v{c['champion']}; "
                f"stray files: {', '.join(c['stray_files']) or 'none'}"
            ),
            "dvc repro": lambda c: (
                f"`dvc status train`: {c['status']}; `dvc data status`: workspace "
                f"{'matches' if c['workspace_matches_cache'] else 'DIFFERS from'} the cache and dvc.lock; "
                f"`dvc repro train` again skips {', '.join(c['skipped_again']) or 'nothing'}"
            ),
        }[name](c)
        lines.append(
            f"| two `{name}` | {', '.join(map(str, c['rcs']))} | {yes(c['one_finished'])} "
            f"| {cell(c['message'])} | {c['refused_after_s']} | {yes(c.get('identical', True))} "
            f"| {c.get('integrity', '–')} | {cell(after)} |"
        )
    return lines


def keep_other_sections(report: str, previous: str) -> str:
    """``report`` (bad-input part only) with ``previous``'s kill-and-resume and concurrent-run sections.

    The header says which parts were re-run; the summary line keeps the previous run's counts of
    the parts that were not.
    """
    start = previous.find("\n## Kill and resume")
    if start < 0:
        return report
    produced = re.search(r"^> Produced at commit (\w+) by: `([^`]*)`", previous, re.M)
    origin = f"commit {produced[1]} (`{produced[2]}`)" if produced else "the previous run"
    kept = re.search(r", kill-and-resume identical: (.*?)\.\*\*", previous)
    if kept:
        report = report.replace(".**\n", f", kill-and-resume identical: {kept[1]} (kept).**\n", 1)
    note = (
        f"> Re-run: the bad-input and command-line cases only. Kept from the run at {origin}: the "
        "kill-and-resume and concurrent-run sections below and their counts in the summary line.\n"
    )
    head, _, body = report.partition("\n\n")  # the title, then the "Produced" line
    produced_line, _, body = body.partition("\n")
    return f"{head}\n\n{produced_line}\n{note}{body}{previous[start:]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=3, help="featurize kill-and-resume trials")
    parser.add_argument("--train-trials", type=int, default=3, help="train kill-and-resume trials")
    parser.add_argument("--finetune-trials", type=int, default=3, help="fine-tuning kill-and-resume trials")
    parser.add_argument("--no-concurrency", action="store_true", help="skip the concurrent-run trials")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it (default: a temp folder)")
    parser.add_argument("--report", type=Path, default=ROOT / "reports" / "reliability.md")
    parser.add_argument(
        "--only",
        choices=["bad-input"],
        help="run the bad-input and command-line cases alone; the report keeps its other sections",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ser-reliability-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        trial = run_trial(
            root.resolve(),
            args.trials,
            args.seed,
            train_trials=args.train_trials,
            finetune_trials=args.finetune_trials,
            concurrency=not args.no_concurrency,
            only=args.only,
        )
    from components.tracking.runs import git_commit

    title, _, rest = format_report(trial).partition("\n")
    command = " ".join(["python -m tests.reliability.trial", *sys.argv[1:]])
    report = f"{title}\n\n> Produced at commit {git_commit()[:7]} by: `{command}`\n{rest}"
    if args.only:
        report = keep_other_sections(report, args.report.read_text() if args.report.exists() else "")
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
