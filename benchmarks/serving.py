"""Benchmark of the REST server (``make serve``): round-trip latency of one 4 s clip, server memory.

Starts ``mlflow models serve -m MODEL --env-manager local`` on a free 127.0.0.1 port, exactly as
``make serve`` does, waits until it answers ``/ping``, then:

- memory: the resident set size (RSS) of the server's process tree (the ``mlflow`` process and
  the ``uvicorn`` child that holds the model), sampled every 50 ms from start to end; reported
  idle with the model loaded and at its peak while serving;
- latency: ``--requests`` sequential POSTs of one 4 s clip (48 kHz 16-bit WAV, base64 in
  ``dataframe_split``), each on a new connection as ``curl`` would, after 3 warm-up requests;
  p50, p95, mean and max of the client-side round trip.

The model is ``models:/ravdess-emotion@champion`` of the project's store (``MLFLOW_TRACKING_URI``
or ``tracking.tracking_uri``); ``--demo`` instead fits a logistic regression on a small demo
corpus in a temporary store, so the benchmark runs without pipeline outputs. Writes
``reports/serving.md`` and prints it.

Usage: ``python benchmarks/serving.py [--model URI] [--requests 100] [--demo]``
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from common import ROOT, add_common_args, write_report


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TreeMemory:
    """Samples the summed RSS of a process and its descendants in a background thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def current(self) -> int:
        """Summed RSS of the tree now, in bytes."""
        return sum(self.by_process().values())

    def by_process(self) -> dict[str, int]:
        """RSS of each process of the tree now, by ``name[pid]``."""
        import psutil

        sizes = {}
        for process in [self.root, *self.root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                sizes[f"{process.name()}[{process.pid}]"] = process.memory_info().rss
        return sizes

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), self.current()))
            time.sleep(self.interval)

    def start(self) -> TreeMemory:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, since: float = 0.0) -> int:
        return max((rss for t, rss in self.samples if t >= since), default=0)


def stop_tree(pid: int) -> None:
    """Terminate the server we started and the uvicorn process it started."""
    import psutil

    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    tree = [*parent.children(recursive=True), parent]
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    psutil.wait_procs(tree, timeout=30)


def clip_payload() -> tuple[bytes, int]:
    """A ``dataframe_split`` request with one 4 s, 48 kHz 16-bit synthetic utterance; and its WAV size."""
    import soundfile as sf

    from components.data.audio import fit_length
    from components.data.synth import corpus_labels, synthesize_clip

    labels = corpus_labels([21])[20]  # an actor no model saw
    signal = fit_length(synthesize_clip(labels, 48_000, seed=1), 4 * 48_000)
    buffer = io.BytesIO()
    sf.write(buffer, signal, 48_000, format="WAV", subtype="PCM_16")
    wav = buffer.getvalue()
    body = {"dataframe_split": {"columns": ["audio_base64"], "data": [[base64.b64encode(wav).decode()]]}}
    return json.dumps(body).encode(), len(wav)


def post(url: str, body: bytes) -> dict:
    request = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def demo_store(workdir: Path) -> tuple[str, str]:
    """A temporary store holding a logistic regression fitted on the demo corpus (handmade features)."""
    from predict import demo_features, fit_predictor, register_in

    features = demo_features(workdir, ["handmade", "egemaps"])
    store = f"sqlite:///{workdir / 'mlflow.db'}"
    return store, register_in(store, workdir, "logreg", fit_predictor("logreg", features, epochs=1))


def project_store() -> str:
    from components.settings import load_params

    uri = (
        os.environ.get("MLFLOW_TRACKING_URI") or load_params(ROOT / "params.yaml")["tracking"]["tracking_uri"]
    )
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_absolute():
        uri = f"sqlite:///{(ROOT / uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def benchmark(store: str, model: str, n_requests: int, workdir: Path) -> dict:
    """Start the server, measure memory and latency, stop it."""
    from mlflow import MlflowClient

    from components.registry.model_io import describe_uri

    bin_dir = Path(sys.executable).parent
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    command = [str(bin_dir / "mlflow"), "models", "serve", "-m", model, "--env-manager", "local"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    log_path = workdir / "serve.log"
    started = time.monotonic()
    with log_path.open("w") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
        memory = TreeMemory(server.pid).start()
        try:
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/ping", timeout=2):
                        break
                except OSError as err:
                    if server.poll() is not None or time.monotonic() - started > 300:
                        raise RuntimeError(f"server did not start:\n{log_path.read_text()}") from err
                    time.sleep(0.2)
            ready_s = time.monotonic() - started
            time.sleep(1.0)
            parts = memory.by_process()
            idle = sum(parts.values())
            body, wav_bytes = clip_payload()
            for _ in range(3):
                answer = post(url, body)
            serving_since = time.monotonic()
            latencies = []
            for _ in range(n_requests):
                t0 = time.perf_counter()
                post(url, body)
                latencies.append(time.perf_counter() - t0)
            peak = memory.peak(since=serving_since)
            peak_all = memory.peak()
        finally:
            memory.stop()
            stop_tree(server.pid)
    ms = 1000 * np.array(latencies)
    return {
        "model": describe_uri(MlflowClient(store), model),
        "label": answer["predictions"][0]["label"],
        "ready_s": ready_s,
        "idle_rss_mb": idle / 2**20,
        "idle_parts_mb": {name: rss / 2**20 for name, rss in parts.items()},
        "load": os.getloadavg()[0],
        "peak_rss_mb": peak / 2**20,
        "peak_rss_all_mb": peak_all / 2**20,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": float(ms.mean()),
        "max_ms": float(ms.max()),
        "n_requests": n_requests,
        "wav_kb": wav_bytes / 1000,
        "body_kb": len(body) / 1000,
    }


def report(result: dict, model_uri: str, demo: bool) -> str:
    """The Markdown report."""
    about = result["model"]
    tags = about.get("tags", {})
    what = f"{about.get('name', model_uri)} v{about.get('version', '?')}: {tags.get('model_name', '?')}"
    source = "a logistic regression fitted on the demo corpus (`--demo`)" if demo else "the project's store"
    command = f"python benchmarks/serving.py{' --demo' if demo else ''}"
    parts = ", ".join(f"{name} {mb:.0f}" for name, mb in result["idle_parts_mb"].items())
    lines = [
        "# REST serving benchmark",
        "",
        f"`{command}` on {os.cpu_count()} CPUs (shared; 1-minute load {result['load']:.1f} at the end),",
        f"Python {platform.python_version()}:",
        f"`mlflow models serve -m {model_uri} --env-manager local` (as `make serve`),",
        f"model {what} from {source}. One 4 s clip, 48 kHz 16-bit WAV",
        f"({result['wav_kb']:.0f} kB; {result['body_kb']:.0f} kB as base64 JSON), {result['n_requests']}",
        "sequential requests after 3 warm-up ones, a new connection each; memory is the summed RSS",
        "of the server's process tree (mlflow CLI + uvicorn), sampled every 50 ms.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| round trip p50 | {result['p50_ms']:.1f} ms |",
        f"| round trip p95 | {result['p95_ms']:.1f} ms |",
        f"| round trip mean / max | {result['mean_ms']:.1f} / {result['max_ms']:.1f} ms |",
        f"| server RSS, model loaded, idle | {result['idle_rss_mb']:.0f} MB ({parts}) |",
        f"| server RSS, peak while serving | {result['peak_rss_mb']:.0f} MB |",
        f"| server RSS, peak from start | {result['peak_rss_all_mb']:.0f} MB |",
        f"| start until `/ping` answers | {result['ready_s']:.1f} s |",
        "",
        "The round trip is mostly feature extraction (see `reports/predict.md`); JSON and base64",
        "add little. The mlflow CLI parent stays resident beside uvicorn and is counted.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Start, measure, stop; write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/ravdess-emotion@champion")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--demo", action="store_true", help="fit a small model in a temporary store")
    add_common_args(parser, "serving")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        workdir = Path(tmp)
        if args.demo:
            store, model = demo_store(workdir)
        else:
            store, model = project_store(), args.model
        result = benchmark(store, model, args.requests, workdir)
    text = report(result, model, args.demo)
    write_report(args.out, text)


if __name__ == "__main__":
    main()
