"""How much does the random protocol's accuracy depend on the number of actors and on clip length?

    python benchmarks/data_size.py [--models rf,svm] [--seeds 5] [--durations 1.4,1.8] [--workers 2]

The original project's random-split numbers (RF 74 %, ...) come from all 24 actors and full-length
clips (about 3.7 s); the sample here (RAVDESS_DIR) has 12 actors and the first 2.39 s of each clip.
This scores models under the ``random`` protocol (seed 42 is the original's; more seeds show the
split's own noise), fitting on the training and validation parts as the pipeline does, with params.yaml's
sections: on the first 4, 6, 8, 10 and 12 actors (even counts: as many men as women), and on all 12
actors with every clip cut shorter still (``--durations``; cut copies cached under .ser-cache/).
The slopes say what more speakers, or more of each sentence, are worth. Writes reports/data_size.md.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from augment_explore import transform_folder  # a sibling script: benchmarks/ is on sys.path

from components.evaluation.dataset import load_dataset
from components.evaluation.evaluate import ModelSpec
from components.evaluation.metrics import format_table
from components.evaluation.protocols import make_splits
from components.models import build_model
from components.runtime.files import write_text
from components.settings import load_params
from flows.featurize import featurize_data

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".ser-cache"
FEATURES = CACHE / "ravdess-features"  # shared with the explore benchmarks
ACTOR_COUNTS = (4, 6, 8, 10, 12)
SAMPLE_SECONDS = 2.39  # the sample's clip length (its README)


def random_accuracy(job: tuple[str, dict[str, Any], Path, int, int]) -> float:
    """Test accuracy of one classical model section under ``random`` on the first ``n_actors`` actors."""
    name, section, features, n_actors, seed = job
    spec = ModelSpec.from_params(name, section)
    data = load_dataset(features, spec.stats_sets, False)
    data = data.subset(data.labels["actor"].to_numpy() <= n_actors)
    y = data.labels["emotion"].to_numpy()
    (split,) = make_splits(data.labels, "random", seed=seed)
    train = np.union1d(split.train, split.val)
    model = build_model(spec.kind, spec.params).fit(data.inputs(train, spec.stats_sets, False), y[train])
    return float(np.mean(model.predict(data.inputs(split.test, spec.stats_sets, False)) == y[split.test]))


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares change of ``ys`` per doubling of ``xs``."""
    return float(np.polyfit(np.log2(xs), ys, 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="rf,svm")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--durations", default="1.4,1.8", help="shorter cuts in seconds ('' for none)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    data_dir = Path(os.environ.get("RAVDESS_DIR", ROOT.parent / "shared" / "ravdess"))
    params = load_params(ROOT / "params.yaml")
    models = args.models.split(",")
    needed = sorted({s for m in models for s in ModelSpec.from_params(m, params[m]).stats_sets})
    featurize_data(data_dir, FEATURES, params, needed)
    folders = {SAMPLE_SECONDS: FEATURES}
    for seconds in [float(d) for d in args.durations.split(",") if d]:
        audio = CACHE / f"ravdess-cut{seconds:g}-audio"
        transform_folder(data_dir, audio, lambda signal, rate, name, s=seconds: signal[: round(s * rate)])
        folders[seconds] = CACHE / f"ravdess-cut{seconds:g}-features"
        featurize_data(audio, folders[seconds], params, needed)
    seeds = [42 + i for i in range(args.seeds)]
    cases = [(n, SAMPLE_SECONDS) for n in ACTOR_COUNTS] + [(12, s) for s in folders if s != SAMPLE_SECONDS]
    jobs = [(m, params[m], folders[s], n, seed) for m in models for n, s in cases for seed in seeds]
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        scores = iter(pool.map(random_accuracy, jobs))
        by = {(m, n, s): [next(scores) for _ in seeds] for m in models for n, s in cases}
    minutes = (time.perf_counter() - started) / 60
    rows = [
        {
            "model": model,
            "actors": n,
            "clip s": seconds,
            "accuracy (seed 42)": round(values[0], 3),
            f"mean over {len(seeds)} seeds": round(float(np.mean(values)), 3),
            "sd": round(float(np.std(values)), 3),
        }
        for (model, n, seconds), values in by.items()
    ]
    durations = sorted(folders)
    lines = []
    for model in models:
        per_actors = slope(
            list(ACTOR_COUNTS), [np.mean(by[(model, n, SAMPLE_SECONDS)]) for n in ACTOR_COUNTS]
        )
        line = f"- {model}: {per_actors:+.3f} accuracy per doubling of the actors"
        if len(durations) > 1:
            per_second = slope(durations, [np.mean(by[(model, 12, s)]) for s in durations])
            line += f"; {per_second:+.3f} per doubling of the clip length"
        lines.append(line + " (least squares on log2, means over seeds)")
    command = (
        f"python benchmarks/data_size.py --models {args.models} --seeds {args.seeds} "
        f"--durations {args.durations} --workers {args.workers}"
    )
    report = "\n".join(
        [
            "# Random-protocol accuracy against the number of actors and the clip length",
            "",
            f"`{command}` ({minutes:.1f} min of fitting) on the real sample. Each row: the original",
            "project's stratified 80/20 random split of the first N actors' clips (speech and song), each",
            "clip cut to its first `clip s` seconds (2.39: the sample as it is), fitted on the training",
            "part with params.yaml's section, accuracy on the test part.",
            "",
            *lines,
            "",
            format_table(rows, list(rows[0])),
            "",
        ]
    )
    write_text(ROOT / "reports" / "data_size.md", report)
    print(report)


if __name__ == "__main__":
    main()
