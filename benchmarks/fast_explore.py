"""Can the champion drop eGeMAPS (half its prediction time) without losing accuracy? On validation actors.

    python benchmarks/fast_explore.py [--workers 2]

``ensemble_compare`` extracts two openSMILE sets per clip, eGeMAPS and ComParE_2016, each about
as slow as the other (about 13 and 10 ms per second of audio on one core, plus a fixed cost),
which puts its prediction near 90 ms for a 4 s clip. This scores configurations that read
hand-made statistics and ComParE only against ``ensemble_compare`` itself, the way
benchmarks/compare_explore.py does: fitted on each actor-kfold fold's training actors, scored on
its 2 validation actors, test actors never read; speech and all, with and without per-speaker
normalisation. It also times each configuration's feature extraction on one core, on a real
clip of the sample (natural length after the pipeline's silence trimming) and on a 4 s clip.
Needs the sample's ``compare`` features (benchmarks/compare_explore.py caches them).
Writes reports/fast_explore.md and .json.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from compare_explore import (  # a sibling script: benchmarks/ is on sys.path
    accuracy_cells,
    map_timed,
    params_configs,
    validation_scores,
    write_report,
)

from components.data import audio
from components.features import sets
from components.settings import load_params

ROOT = Path(__file__).resolve().parents[1]
H, HC = ["handmade"], ["handmade", "compare"]


def configurations() -> dict[str, dict[str, Any]]:
    """Every configuration tried, by name; ``ensemble_compare`` is params.yaml's champion."""
    svm_h = {"kind": "svm", "features": H, "C": 10.0}
    return {
        **params_configs(["ensemble_compare"]),
        "svm_handmade": {**svm_h},
        **{f"logreg_hc_C{C}": {"kind": "logreg", "features": HC, "C": C} for C in (0.003, 0.01, 0.03)},
        "vote_svm_h+logreg_hc": {
            "kind": "ensemble",
            "features": HC,
            "members": {"svm": svm_h, "logreg_compare": {"kind": "logreg", "features": HC, "C": 0.01}},
        },
        "vote_svm_h+logreg_h+logreg_hc": {
            "kind": "ensemble",
            "features": HC,
            "members": {
                "svm": svm_h,
                "logreg": {"kind": "logreg", "features": H, "C": 0.1},
                "logreg_compare": {"kind": "logreg", "features": HC, "C": 0.01},
            },
        },
    }


def extraction_ms(feature_sets: list[str], clips: list[np.ndarray], params: dict[str, Any]) -> float:
    """Median one-core milliseconds to extract ``feature_sets`` from each clip (after a warm-up)."""
    sets.warm_up(feature_sets, params)
    times = []
    for clip in clips:
        started = time.perf_counter()
        sets.extract_sets(clip, params["sampling_rate"], feature_sets, params)
        times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times))


def timing_clips(data_dir: Path, params: dict[str, Any]) -> dict[str, list[np.ndarray]]:
    """Twenty real speech clips as the pipeline loads them, and the same clips tiled to 4 s."""
    files = sorted((data_dir / "speech").rglob("*.wav"))[::36][:20]
    rate = params["sampling_rate"]
    real = [audio.load_clip(f, None, params["trim_top_db"], rate) for f in files]
    long = [np.tile(audio.load_clip(f, None, None, rate), 2)[: 4 * rate] for f in files]
    long = [audio.trim_silence(clip, rate, params["trim_top_db"]) for clip in long]
    return {"real": real, "4 s": long}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    data_dir = Path(os.environ.get("RAVDESS_DIR", ROOT.parent / "shared" / "ravdess"))
    params = load_params(ROOT / "params.yaml")
    extract = sets.extract_params(params["preprocess"], params["featurize"])
    configs = configurations()
    clips = timing_clips(data_dir, extract)
    cost = {
        name: {kind: extraction_ms(config["features"], group, extract) for kind, group in clips.items()}
        for name, config in configs.items()
    }
    jobs = [(c, s, n) for s in ("speech", "all") for n in (False, True) for c in configs.values()]
    scores, minutes = map_timed(validation_scores, jobs, args.workers)
    names = [name for _ in range(4) for name in configs]
    rows = [
        {
            "subset": subset,
            "norm": "speaker" if norm else "none",
            "model": name,
            "features": "+".join(config["features"]),
            **accuracy_cells(s),
            "features ms (real clip)": round(cost[name]["real"], 1),
            "features ms (4 s clip)": round(cost[name]["4 s"], 1),
        }
        for name, (config, subset, norm), s in zip(names, jobs, scores, strict=True)
    ]
    by = {(r["subset"], r["norm"], r["model"]): r["val accuracy"] for r in rows}
    findings = [
        f"{model} over ensemble_compare, {s}/{n}: {score - by[(s, n, 'ensemble_compare')]:+.3f}"
        for (s, n, model), score in by.items()
        if model != "ensemble_compare"
    ]
    command = f"python benchmarks/fast_explore.py --workers {args.workers}"
    lengths = {
        kind: np.median([len(c) for c in group]) / extract["sampling_rate"] for kind, group in clips.items()
    }
    heading = [
        "# Dropping eGeMAPS from the champion, on validation actors",
        "",
        f"`{command}` ({minutes:.1f} min of fitting). Each configuration is fitted on the training",
        "actors of each actor-kfold fold and scored on that fold's 2 validation actors (never its",
        f"test actors); mean ± sd over the 6 folds. {len(configs)} configurations × 2 subsets × 2",
        "normalisations. Feature time: median over 20 real speech clips of the sample, one core,",
        f"after silence trimming (median {lengths['real']:.2f} s of audio; `real clip`), and over the",
        f"same clips tiled to 4 s and trimmed (median {lengths['4 s']:.2f} s; `4 s clip`); the model",
        "itself adds about 1 ms.",
    ]
    write_report("fast_explore", heading, findings, rows, command)


if __name__ == "__main__":
    main()
