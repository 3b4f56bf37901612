"""Benchmark of ``ser predict`` for each model family: latency per 4 s clip and batch throughput.

Each family (params.yaml's ``train.models``: rf, svm, logreg, mlp, cnn, cnn_lstm, cnn_gru) is
fitted on a small demo corpus with its params.yaml features and settings (deep models for
``--epochs`` epochs only: accuracy is not measured here, inference cost does not depend on
it), logged and registered in a temporary MLflow store exactly as the train stage does, loaded
back with ``components.registry.model_io.load_model`` and timed through
``components.serving.predict.predict_files``, the code behind ``ser predict``:

- single: one 4 s clip (48 kHz 16-bit WAV, as RAVDESS), warm (after 3 calls), median and p95
  of ``--repeats`` calls of ``predict_files([clip], batch_size=1)``: read, resample, features,
  model;
- batch: ``--n-clips`` different 4 s clips in one ``predict_files`` call with batch size 32.

Also times one cold ``ser predict`` of one clip in a fresh process (imports and model loading
included). Writes ``reports/predict.md`` and prints it.

Usage: ``python benchmarks/predict.py [--models rf,logreg] [--n-clips 64] [--repeats 20]``
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import ROOT, add_common_args, write_report

CLIP_DUR = 4.0  # seconds: the models' clip length (preprocess.clip_dur)
CLIP_RATE = 48_000  # RAVDESS's rate: resampling is part of the cost
N_ACTORS = 4  # demo actors to fit on: 416 clips, enough for every family to train


def demo_features(workdir: Path, feature_sets: list[str]) -> Path:
    """Synthesise a small demo corpus and extract ``feature_sets``; returns the features folder."""
    from components.data.discover import discover
    from components.data.metadata import build_metadata
    from components.data.synth import write_corpus
    from components.features.featurize import featurize
    from components.features.sets import extract_params
    from components.settings import load_params

    params = load_params(ROOT / "params.yaml")
    raw, features = workdir / "raw", workdir / "features"
    write_corpus(raw, n_actors=N_ACTORS, seed=0, n_jobs=2)
    clips, _ = build_metadata(discover(raw), silence_dbfs=params["featurize"]["silence_dbfs"])
    extract = extract_params(params["preprocess"], params["featurize"])
    featurize(clips, features, feature_sets, extract, n_jobs=2, progress=False)
    return features


def fit_predictor(name: str, features: Path, epochs: int) -> Any:
    """One params.yaml model fitted on the demo features, wrapped with its extraction settings."""
    from components.evaluation.dataset import load_dataset
    from components.evaluation.evaluate import ModelSpec, fit_on_rows
    from components.features.sets import extract_params
    from components.serving.pyfunc import EmotionPredictor
    from components.settings import load_params

    params = load_params(ROOT / "params.yaml")
    spec = ModelSpec.from_params(name, params[name])
    if spec.uses_logmel and "epochs" in spec.params:
        spec.params["epochs"] = epochs
    data = load_dataset(features, list(spec.stats_sets), spec.uses_logmel, spec.sequence)
    actors = data.labels["actor"].to_numpy()
    val = np.flatnonzero(actors == actors.max()) if spec.uses_logmel else np.array([], dtype=int)
    train = np.setdiff1d(np.arange(len(data)), val)
    model = fit_on_rows(spec, data, train, val)
    extract = extract_params(params["preprocess"], params["featurize"])
    info = {"model": name, "kind": spec.kind}
    return EmotionPredictor(model, spec.stats_sets, spec.uses_logmel, extract, info, spec.sequence)


def register_in(store: str, workdir: Path, name: str, predictor: Any) -> str:
    """Log and register ``predictor`` as ``bench-<name>`` in ``store``; returns its model URI."""
    import mlflow

    from components.registry.model_io import register_predictor

    previous = os.getcwd()
    os.chdir(workdir)  # the experiment's artifacts go under ./mlruns
    try:
        mlflow.set_tracking_uri(store)
        register_predictor(predictor, f"bench-{name}", {"model_name": name}, alias="champion")
    finally:
        os.chdir(previous)
    return f"models:/bench-{name}@champion"


def write_clips(folder: Path, n_clips: int) -> list[Path]:
    """``n_clips`` different synthetic utterances, each exactly 4 s of 48 kHz 16-bit WAV."""
    import soundfile as sf

    from components.data.audio import fit_length
    from components.data.synth import corpus_labels, synthesize_clip

    folder.mkdir(parents=True, exist_ok=True)
    labels = corpus_labels([21, 22])  # actors the models never saw
    paths = []
    for i, clip in enumerate(labels[:n_clips]):
        signal = fit_length(synthesize_clip(clip, CLIP_RATE, seed=1), int(CLIP_DUR * CLIP_RATE))
        path = folder / f"{clip.clip_id}.wav"
        sf.write(path, signal, CLIP_RATE, subtype="PCM_16")
        paths.append(path)
        if i + 1 == n_clips:
            break
    return paths


def time_model(uri: str, clips: list[Path], repeats: int, threads: int) -> dict[str, float]:
    """Warm single-clip latency and batch throughput through ``predict_files``, torch on ``threads``."""
    from components.registry.model_io import load_model
    from components.serving.predict import predict_files, set_torch_threads

    set_torch_threads(threads)
    started = time.perf_counter()
    model = load_model(uri)
    load_s = time.perf_counter() - started
    for _ in range(3):  # warm: filterbanks, openSMILE, torch kernels
        predict_files(clips[:1], model.predict_signals, model.clip_dur, batch_size=1, progress=False)
    single = []
    for i in range(repeats):
        started = time.perf_counter()
        results = predict_files([clips[i % len(clips)]], model.predict_signals, model.clip_dur, batch_size=1)
        single.append(time.perf_counter() - started)
        assert results[0].label is not None, results[0].error
    started = time.perf_counter()
    results = predict_files(clips, model.predict_signals, model.clip_dur, batch_size=32, progress=False)
    batch_s = time.perf_counter() - started
    assert all(r.label is not None for r in results)
    return {
        "load_s": load_s,
        "single_p50_ms": 1000 * float(np.median(single)),
        "single_p95_ms": 1000 * float(np.percentile(single, 95)),
        "batch_clips_per_s": len(clips) / batch_s,
        "n_clips": len(clips),
    }


def cold_cli(store: str, uri: str, clip: Path) -> float:
    """Seconds for ``ser predict CLIP`` in a fresh process (imports, model load, one clip)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    started = time.perf_counter()
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ser"), "predict", str(clip), "--model", uri],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return elapsed


def report(rows: list[dict], cold: dict[str, float], args: argparse.Namespace) -> str:
    """The Markdown report."""
    from components.evaluation.metrics import format_table

    load = os.getloadavg()[0]
    command = " ".join(["python benchmarks/predict.py", *sys.argv[1:]])
    lines = [
        "# `ser predict` benchmark",
        "",
        f"`{command}` on {os.cpu_count()} CPUs (shared; 1-minute load {load:.1f} at the",
        f"end), Python {platform.python_version()}. Each model family was fitted on the",
        f"{N_ACTORS}-actor demo corpus with its params.yaml features and settings (deep models:",
        f"{args.epochs} epochs), registered in a temporary MLflow store like the train stage does,",
        "loaded back and timed through",
        "`components.serving.predict.predict_files` (the code behind `ser predict`): read the WAV, resample",
        "48 → 16 kHz, extract features, predict.",
        "",
        f"- single: one 4 s clip (48 kHz 16-bit), warm, median and p95 over {args.repeats} calls;",
        f"- batch: {args.n_clips} different 4 s clips in one call, batch size 32 (clips/s);",
        "- load: `mlflow.pyfunc.load_model` of the registered version (MLflow already imported).",
        "",
        format_table(
            rows,
            ["model", "features", "threads", "single p50 ms", "single p95 ms", "batch clips/s", "load s"],
            digits=1,
        ),
        "",
        "`threads`: torch threads per operation (`ser predict --threads`, default 1); classical",
        "models do not use torch. On this shared 2-core machine two threads mostly wait for each other",
        "(likely OpenMP synchronisation while the other core is busy elsewhere): one thread is faster.",
        "",
    ]
    if cold:
        name, seconds = next(iter(cold.items()))
        lines += [
            f"Cold start: `ser predict one_clip.wav` ({name}) in a fresh process took {seconds:.1f} s",
            "(Python start, imports of MLflow/Prefect/torch, model loading from the store, one clip).",
            "",
        ]
    lines += [
        "Where the time goes: eGeMAPS and ComParE_2016 (openSMILE) cost tens of ms each per 4 s clip,",
        "in every batch, so the models that read them (svm, logreg, mlp, the *_compare models) gain",
        "nothing from batching; hand-made statistics and log-mels share one STFT and take a few ms.",
        "Timings on a shared 2-core machine are noisy.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Fit, register, time; write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="rf,svm,logreg,mlp,cnn,cnn_lstm,cnn_gru")
    parser.add_argument("--n-clips", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", default="1,2", help="torch thread counts to time deep models with")
    parser.add_argument("--no-cold", action="store_true", help="skip the fresh-process `ser predict` timing")
    add_common_args(parser, "predict")
    args = parser.parse_args()

    from components.evaluation.evaluate import ModelSpec
    from components.settings import load_params

    params = load_params(ROOT / "params.yaml")
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    thread_counts = [int(n) for n in args.threads.split(",")]
    specs = {n: ModelSpec.from_params(n, params[n]) for n in names}  # ensembles: their members' sets
    sets = sorted({s for spec in specs.values() for s in spec.stats_sets})
    if any(spec.uses_logmel for spec in specs.values()):
        sets.append("logmel")
    rows, cold = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        workdir = Path(tmp)
        started = time.perf_counter()
        features = demo_features(workdir, sets)
        clips = write_clips(workdir / "clips", args.n_clips)
        print(
            f"demo corpus featurized ({', '.join(sets)}) in {time.perf_counter() - started:.0f} s", flush=True
        )
        store = f"sqlite:///{workdir / 'mlflow.db'}"
        for name in names:
            started = time.perf_counter()
            uri = register_in(store, workdir, name, fit_predictor(name, features, args.epochs))
            fitted = time.perf_counter() - started
            deep = specs[name].uses_logmel
            features_used = "+".join(["logmel"] * deep + list(specs[name].stats_sets))
            for threads in thread_counts if deep else [1]:
                timing = time_model(uri, clips, args.repeats, threads)
                rows.append(
                    {
                        "model": name,
                        "features": features_used,
                        "threads": str(threads) if deep else "-",
                        "single p50 ms": timing["single_p50_ms"],
                        "single p95 ms": timing["single_p95_ms"],
                        "batch clips/s": timing["batch_clips_per_s"],
                        "load s": timing["load_s"],
                    }
                )
                print(f"{name} ({threads} threads): fitted in {fitted:.0f} s; {timing}", flush=True)
            if not args.no_cold and not cold:
                cold[name] = cold_cli(store, uri, clips[0])
    text = report(rows, cold, args)
    write_report(args.out, text)


if __name__ == "__main__":
    main()
