"""Fixtures of the model tests."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import soundfile as sf

from components.data.discover import discover, read_bytes
from components.features.featurize import featurize
from tests.conftest import tone


@pytest.fixture
def corpus(tmp_path, write_wav) -> pd.DataFrame:
    """Eight 1 s clips of two actors and two emotions, as the validate stage hands them over."""
    for index in range(8):
        actor, emotion = 1 + index % 2, 1 + (index // 2) % 2  # neutral (01) is low, calm (02) high
        name = f"03-01-{emotion:02d}-01-01-{1 + index // 4:02d}-{actor:02d}.wav"
        signal = tone(freq=140.0 * emotion + 10 * index, seed=index)
        write_wav(tmp_path / "corpus" / f"Actor_{actor:02d}" / name, signal)
    rows = []
    for found in discover(tmp_path / "corpus").files:
        row = {**found.labels.as_dict(), "location": found.location}
        row["content_hash"] = hashlib.sha256(read_bytes(found.location)).hexdigest()
        rows.append(row)
    return pd.DataFrame(rows)


def table_from_forked_workers(corpus: pd.DataFrame, folder: Path, name: str, params: dict) -> Path:
    """Featurize ``name`` in this process, then in two forked workers; assert both tables are the same
    bytes (a worker must not reuse the parent's encoder) and return the first one's path."""
    featurize(corpus, folder / "one", [name], params, progress=False)
    featurize(
        corpus, folder / "two", [name], params, n_jobs=2, chunk_size=2, progress=False, start_method="fork"
    )
    table = folder / "one" / f"{name}.parquet"
    assert table.read_bytes() == (folder / "two" / f"{name}.parquet").read_bytes()
    return table


def predicted_in_fresh_process(predictor: Any, store: str, model_name: str, folder: Path) -> dict:
    """Register ``predictor`` as the champion in ``store``, then `ser predict` a new 1.5 s 8 kHz clip in
    a fresh process that has only the store and an empty TMPDIR (so nothing converted earlier is reused).

    Returns:
        The JSON result of that one file (``label``, ``confidence``, ...).
    """
    import mlflow

    from components.registry.model_io import register_predictor

    try:
        register_predictor(predictor, "ravdess-emotion", {"model_name": model_name}, "champion")
    finally:
        mlflow.set_tracking_uri(None)
    wav = folder / "new" / "clip.wav"
    wav.parent.mkdir(parents=True)
    sf.write(wav, tone(dur=1.5, sampling_rate=8_000, freq=280.0), 8_000)
    (folder / "tmp").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "cli", "predict", str(wav), "--json", "out.json"],
        cwd=wav.parent,
        env={**os.environ, "MLFLOW_TRACKING_URI": store, "TMPDIR": str(folder / "tmp")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((wav.parent / "out.json").read_text())["files"][0]
