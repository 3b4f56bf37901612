"""Peak memory of ``ser predict`` and ``ser validate`` against the length of one 48 kHz recording.

Each command runs in a fresh process under ``/usr/bin/time -v`` (its maximum resident set
size). ``ser predict`` scores with a small logistic regression on hand-made features, trained
here on synthetic tones and registered in a throw-away MLflow store, so the figure is the
reading and windowing, not a large model. Before issue 20, a 60-minute file cost about 2.8 GB in
``ser validate`` (read whole to reject it for its duration) and 2.7 GB in ``ser predict``.

    python benchmarks/memory.py                  # 1, 10 and 60 minutes -> reports/memory.md
    python benchmarks/memory.py --minutes 1 10   # a quicker run
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from common import ROOT, add_common_args, write_report

RATE = 48_000
NAME = "03-01-05-01-01-01-01.wav"  # a RAVDESS name: validate parses it, then judges the audio
MODEL = "memory-bench"


def write_recording(path: Path, minutes: float) -> Path:
    """A 16-bit mono WAV of ``minutes``, written 10 s at a time (a tone with noise, never silent)."""
    rng = np.random.default_rng(0)
    t = np.arange(10 * RATE) / RATE
    with sf.SoundFile(path, "w", RATE, 1, "PCM_16") as out:
        for _ in range(round(minutes * 6)):
            block = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(len(t))
            out.write(block.astype(np.float32))
    return path


def register_small_model(store: Path) -> str:
    """A logistic regression on hand-made features of synthetic tones, registered in ``store``."""
    import mlflow

    from components.data.ravdess import EMOTIONS
    from components.features.sets import extract_params
    from components.models import build_model
    from components.registry.model_io import register_predictor
    from components.serving.pyfunc import EmotionPredictor
    from components.settings import Featurize, Preprocess

    extract = extract_params(Preprocess(), Featurize())
    predictor = EmotionPredictor(None, ("handmade",), False, extract, {"model": "logreg", "kind": "logreg"})
    codes = sorted(EMOTIONS)
    t = np.arange(2 * 16_000) / 16_000
    signals = [0.3 * np.sin(2 * np.pi * (120 + 40 * i) * t).astype(np.float32) for i in range(2 * len(codes))]
    prepared = [predictor.prepare(signal, 16_000) for signal in signals]
    predictor.model = build_model("logreg").fit(predictor.inputs(prepared), np.array(codes * 2))
    uri = f"sqlite:///{store / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    cwd = Path.cwd()
    os.chdir(store)  # the run's artifacts go under ./mlruns
    try:
        register_predictor(predictor, MODEL)
    finally:
        os.chdir(cwd)
        mlflow.set_tracking_uri(None)
    return uri


def peak_rss(command: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Peak resident memory (MB), wall seconds and exit code of ``command`` in a fresh process."""
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-v", *command], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    if found is None:
        raise SystemExit(f"no memory figure from /usr/bin/time: {done.stderr[-2000:]}")
    return int(found.group(1)) / 1024, seconds, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser, "memory")
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="ser-memory-") as tmp:
        tmp_path = Path(tmp)
        uri = register_small_model(tmp_path)
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"}
        for minutes in args.minutes:
            folder = tmp_path / f"{minutes:g}min"
            folder.mkdir()
            wav = write_recording(folder / NAME, minutes)
            size_mb = wav.stat().st_size / 1e6
            predict = [sys.executable, "-m", "cli", "predict", str(wav), "--model", f"models:/{MODEL}/1"]
            validate = [sys.executable, "-m", "cli", "validate", str(folder)]
            for name, command in (("ser predict", predict), ("ser validate", validate)):
                rss, seconds, code = peak_rss(command, env)
                rows.append((name, minutes, size_mb, rss, seconds, code))
                print(f"{name} {minutes:g} min: {rss:.0f} MB peak, {seconds:.1f} s, exit {code}", flush=True)
            wav.unlink()
    lines = [
        "# Peak memory against recording length (48 kHz, 16-bit mono WAV)",
        "",
        "Peak resident set size of one fresh process (`/usr/bin/time -v`), imports included. `ser predict`",
        "checks the file from its header, measures its levels block by block and decodes one window",
        "at a time; `ser validate` rejects a file longer than `validate.max_audio_dur` from its header",
        "(exit 1: nothing accepted), reading none of it. Before issue 20 a 60-minute file cost about",
        "2.8 GB in `ser validate` and 2.7 GB in `ser predict`.",
        "",
        "| command | minutes | file MB | peak RSS MB | wall s | exit |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {n} | {m:g} | {s:.0f} | {r:.0f} | {w:.1f} | {c} |" for n, m, s, r, w, c in rows]
    write_report(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
