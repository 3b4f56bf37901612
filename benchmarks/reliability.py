"""Reliability trial: ``ser validate``, ``ser predict`` and ``ser featurize`` on bad inputs.

Builds every input itself in a temporary folder: a one-actor demo corpus (good clips) beside
broken and unusual files (corrupt or truncated headers, empty and non-audio files, NaN/Inf
samples, silence, clipping, 8- to 64-bit samples, 8 and 96 kHz, 6 channels, a 10-minute
file, bad names, a song clip with emotion 07, a duplicated clip id, a symlink loop) and zips
(``../`` and absolute members, a zip bomb). For each case it records what ``ser validate``
and ``ser predict`` (subprocesses, a tiny logistic regression registered in a temporary
MLflow store) did, whether the message names the file and its problem, and whether a
traceback appeared. It hashes every raw file before and after (none may change) and lists
the temporary tree (nothing may appear outside the output folders). Finally it SIGKILLs
``ser featurize`` at random times, re-runs it to completion and compares the Parquet tables
with an uninterrupted run's.

Writes ``reports/reliability.md`` and prints it.

Usage: ``python benchmarks/reliability.py [--trials 3] [--seed 0] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
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
    import io

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


def ser(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> dict:
    """Run ``ser ARGS`` in a fresh process; its exit code, output and wall time."""
    command = [sys.executable, "-m", "flows.cli", *args]
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

    from components.dataset import load_dataset
    from components.discover import discover
    from components.features.sets import extract_params
    from components.featurize import featurize
    from components.metadata import build_metadata
    from components.models import build_model
    from components.serving import EmotionPredictor
    from flows.model_io import register_predictor
    from flows.params import load_params
    from flows.registry import CHAMPION

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
        command = [sys.executable, "-m", "flows.cli", *base, "--out", str(out)]
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


def run_trial(root: Path, n_trials: int = 3, seed: int = 0, sets: str = "handmade,logmel") -> dict:
    """Build every case under ``root``, run the commands on them, return what happened."""
    from components.synth import write_corpus

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
    raw_after = {**hash_tree(data), **hash_tree(zips)}
    changed = sorted(p for p in raw_before if raw_after.get(p) != raw_before[p])
    new = sorted(p for p in list_tree(root) - tree_before if p.split(os.sep)[0] not in OUTPUT_DIRS)
    resume = kill_and_resume(data / "good", root, n_trials, seed, sets)
    return {
        "rows": rows,
        "validate_all": {k: runs["all"][k] for k in ("rc", "seconds")},
        "validate_all_tail": runs["all"]["output"].strip().splitlines()[-1],
        "predict_rc": predicted["rc"],
        "raw_files": len(raw_before),
        "raw_changed": changed,
        "written_outside": new,
        "resume": resume,
    }


def format_report(trial: dict) -> str:
    """The Markdown report."""
    rows = trial["rows"]
    yes = lambda flag: "yes" if flag else "no"  # noqa: E731
    clear = sum(r["clear"] for r in rows)
    crashes = sum(r["crash"] for r in rows)
    trials = trial["resume"]["trials"]
    identical = sum(t["identical"] for t in trials)
    cell = lambda text: str(text).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = [
        "# Reliability: bad inputs, raw-data immutability, kill and resume",
        "",
        "Produced by `python benchmarks/reliability.py`; every input is built in a temporary folder.",
        "Validate: one `ser validate DATA --out OUT` over a one-actor demo corpus (104 good clips) plus",
        "every bad file under `DATA/suspect/` (zips validated one by one). Predict: one `ser predict` of",
        "every bad input with a logistic regression registered in a temporary MLflow store.",
        "Clear message: the expected outcome (rejected with a specific reason naming the file, or",
        "accepted for valid formats), no traceback.",
        "",
        f"**Summary: {clear}/{len(rows)} cases handled with a clear message, {crashes} crashes, "
        f"{len(trial['raw_changed'])} of {trial['raw_files']} raw files changed, "
        f"{len(trial['written_outside'])} paths written outside the output folders, "
        f"kill-and-resume identical {identical}/{len(trials)}.**",
        "",
        "| case | what happened (validate) | what happened (predict) | clear message | crash |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {cell(r['case'])} | {cell(r['validate'])} | {cell(r['predict'])} "
            f"| {yes(r['clear'])} | {yes(r['crash'])} |"
        )
    lines += [
        "",
        f"`ser validate` over all files: exit {trial['validate_all']['rc']} in "
        f"{trial['validate_all']['seconds']:.1f} s; last line: {cell(trial['validate_all_tail'])}",
        f"`ser predict` over all bad inputs: exit {trial['predict_rc']}.",
        f"Raw files changed: {trial['raw_changed'] or 'none'}. Written outside the output folders: "
        f"{trial['written_outside'] or 'nothing'}.",
        "",
        f"## Kill and resume (`ser featurize`, uninterrupted run {trial['resume']['reference_s']} s)",
        "",
        "| trial | SIGKILL after (s) | killed | files after the kill | resumed tables equal | same bytes "
        "| leftovers |",
        "|---|---|---|---|---|---|---|",
    ]
    for index, t in enumerate(trials):
        lines.append(
            f"| {index} | {t['delay_s']} | {yes(t['killed'])} | {', '.join(t['after_kill']) or '–'} | "
            f"{yes(t['identical'])} | {yes(t['same_bytes'])} | {', '.join(t['leftovers']) or 'none'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=3, help="kill-and-resume trials")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it (default: a temp folder)")
    parser.add_argument("--report", type=Path, default=ROOT / "reports" / "reliability.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ser-reliability-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        trial = run_trial(root.resolve(), args.trials, args.seed)
    report = format_report(trial)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
