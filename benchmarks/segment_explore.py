"""eGeMAPS functionals of consecutive parts of the utterance, added to the clip's, on validation actors.

    python benchmarks/segment_explore.py [--segments 2,3] [--workers 2]

Clip-level functionals pool the whole utterance, so where in the sentence a cue comes (a rising
end, a stressed first word) is lost. Every RAVDESS clip says one of two fixed sentences, so the
trimmed utterance cut into ``n`` equal parts roughly aligns the same words across clips. For each
clip of the real sample (RAVDESS_DIR), read like the pipeline reads it (16 kHz, silence trimmed
at ``preprocess.trim_top_db``), the eGeMAPS functionals of each part are cached under .ser-cache/
(``segments<n>``: 88 × n columns). For each actor-kfold fold a configuration is fitted on the
training actors and scored on the fold's 2 validation actors (test actors never read), with and
without the segment columns, with and without per-speaker normalisation. Writes
reports/segment_explore.md and .json.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from compare_explore import (  # sibling script: benchmarks/ is on sys.path
    accuracy_cells,
    fold_scores,
    map_timed,
    params_configs,
    write_report,
)

from components.data.audio import load_clip
from components.evaluation.dataset import Dataset, load_dataset
from components.features import egemaps
from components.settings import load_params

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".ser-cache"
FEATURES = CACHE / "ravdess-features"  # shared with the other explore benchmarks
SETS = ["handmade", "egemaps", "compare"]
SEGMENTS: list[int] = []  # the part counts, set by main before the pool forks


def segment_functionals(signal: np.ndarray, sampling_rate: int, n_segments: int) -> np.ndarray:
    """eGeMAPS functionals of each of ``n_segments`` equal consecutive parts of ``signal``, side by side."""
    return np.concatenate(
        [egemaps.extract(part, sampling_rate) for part in np.array_split(signal, n_segments)]
    )


def clip_segments(job: tuple[Path, tuple[int, ...], float | None, int]) -> dict[int, np.ndarray]:
    """One file's segment functionals for every part count."""
    path, counts, top_db, sampling_rate = job
    signal = load_clip(path, clip_dur=None, trim_top_db=top_db, sampling_rate=sampling_rate)
    return {n: segment_functionals(signal, sampling_rate, n) for n in counts}


def cache_segments(data_dir: Path, counts: list[int], params: dict[str, Any], workers: int) -> None:
    """Write .ser-cache/segments<n>.parquet (index: clip id) for each part count not cached yet."""
    missing = [n for n in counts if not (CACHE / f"segments{n}.parquet").exists()]
    if not missing:
        return
    paths = sorted(data_dir.rglob("*.wav"))
    prep = params["preprocess"]
    jobs = [(path, tuple(missing), prep["trim_top_db"], prep["sampling_rate"]) for path in paths]
    with ProcessPoolExecutor(workers) as pool:
        results = list(pool.map(clip_segments, jobs, chunksize=16))
    for n in missing:
        table = pd.DataFrame(np.stack([r[n] for r in results]), index=[p.stem for p in paths])
        table.columns = [f"part{part}_{name}" for part in range(n) for name in egemaps.feature_names()]
        tmp = CACHE / f".segments{n}.parquet.tmp"
        table.to_parquet(tmp)
        tmp.replace(CACHE / f"segments{n}.parquet")  # atomic: a killed run leaves no half table


def with_segments(data: Dataset) -> Dataset:
    """``data`` with a stats set ``segments<n>`` for each cached part count, rows matched by clip id."""
    stats = dict(data.stats)
    for n in SEGMENTS:
        table = pd.read_parquet(CACHE / f"segments{n}.parquet")
        stats[f"segments{n}"] = table.loc[data.labels["clip_id"]].to_numpy(dtype=np.float32)
    return Dataset(data.labels, stats)


def configurations() -> dict[str, dict[str, Any]]:
    """params.yaml's svm, logreg_compare and ensemble_compare, plain and with each segment set."""
    base = params_configs(["svm", "logreg_compare", "ensemble_compare"])
    configs = dict(base)
    for n in SEGMENTS:
        extra = f"segments{n}"
        for name in ("svm", "logreg_compare"):
            configs[f"{name} +{extra}"] = {**base[name], "features": [*base[name]["features"], extra]}
        members = {
            name: {**member, "features": [*member["features"], extra]}
            for name, member in base["ensemble_compare"]["members"].items()
        }
        features = [*base["ensemble_compare"]["features"], extra]
        configs[f"ensemble_compare +{extra}"] = {
            **base["ensemble_compare"],
            "features": features,
            "members": members,
        }
    return configs


def validation_scores(job: tuple[str, str, bool]) -> list[float]:
    """Validation-actor accuracy of configuration ``name`` on every fold (test actors unread)."""
    name, subset, norm = job
    data = with_segments(load_dataset(FEATURES, SETS, False))
    return fold_scores(data, configurations()[name], subset, norm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--segments", default="2,3")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    data_dir = Path(os.environ.get("RAVDESS_DIR", ROOT.parent / "shared" / "ravdess"))
    SEGMENTS[:] = [int(n) for n in args.segments.split(",")]
    started = time.perf_counter()
    cache_segments(data_dir, SEGMENTS, load_params(ROOT / "params.yaml"), args.workers)
    extract_min = (time.perf_counter() - started) / 60
    jobs = [(name, s, n) for s in ("speech", "all") for n in (False, True) for name in configurations()]
    scores, fit_min = map_timed(validation_scores, jobs, args.workers)
    rows = [
        {
            "subset": subset,
            "norm": "speaker" if norm else "none",
            "model": name,
            **accuracy_cells(s),
        }
        for (name, subset, norm), s in zip(jobs, scores, strict=True)
    ]
    by = {(r["subset"], r["norm"], r["model"]): r["val accuracy"] for r in rows}
    findings = [
        f"{model} over {model.split(' +')[0]}, {s}/{n}: {score - by[(s, n, model.split(' +')[0])]:+.3f}"
        for (s, n, model), score in by.items()
        if " +" in model
    ]
    command = f"python benchmarks/segment_explore.py --segments {args.segments} --workers {args.workers}"
    heading = [
        "# eGeMAPS functionals of consecutive parts of the utterance, on validation actors",
        "",
        f"`{command}` ({extract_min:.1f} min of extraction, {fit_min:.1f} min of fitting). The trimmed",
        "utterance is cut into n equal parts and the eGeMAPS functionals of each are added to the",
        "configuration's features (`+segments<n>`). Fitted on the training actors of each actor-kfold",
        "fold, scored on its 2 validation actors (never its test actors); mean ± sd over the 6 folds.",
        f"{len(rows)} rows.",
    ]
    write_report("segment_explore", heading, findings, rows, command)


if __name__ == "__main__":
    main()
