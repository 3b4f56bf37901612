"""Deep-model configurations (augmentation, pooling, recurrent variants) scored on validation actors.

    python benchmarks/deep_explore.py [--workers 2] [--subsets all,speech] [--configs base,specaug,...]

For each actor-kfold fold (6 folds of 2 test actors, on the real RAVDESS sample in RAVDESS_DIR)
a configuration is fitted on the fold's training actors, early-stopping on a stratified 10 %
of their clips, and scored on the fold's 2 *validation* actors, which it never saw; the test
actors are never read. The score is the validation accuracy pooled over folds, as in
benchmarks/accuracy_explore.py for the classical models. The log-mel input is cut to its first
``--frames`` frames (every trimmed clip of the sample fits in 150; the rest is padding), which
only saves time. Writes reports/deep_explore.md and .json; results are kept per configuration,
so a run can be split across invocations.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from components.evaluation.dataset import load_dataset
from components.evaluation.metrics import format_table
from components.evaluation.protocols import make_splits, select_subset
from components.models import build_model
from components.runtime.files import write_text
from components.settings import load_params
from flows.featurize import featurize_data

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ROOT / ".ser-cache" / "ravdess-features"  # shared with benchmarks/accuracy_explore.py
REPORT = ROOT / "reports" / "deep_explore.md"
STORE = ROOT / "reports" / "deep_explore.json"
SPEC = {"freq_mask": 8, "time_mask": 20, "n_masks": 2}
WARP = {**SPEC, "freq_shift": 2, "time_stretch": 0.1}  # plus mel shifts (pitch/VTLP-like) and speed changes
LONG = {
    "epochs": 40,
    "patience": 8,
}  # augmented nets learn more slowly: a longer budget, for all that compare

CONFIGS: dict[str, dict[str, Any]] = {
    "base": {"kind": "cnn", "epochs": 20, "patience": 4},  # params.yaml's cnn
    "base_long": {"kind": "cnn", **LONG},
    "specaug": {"kind": "cnn", **LONG, "augment": SPEC},
    "mixup": {"kind": "cnn", **LONG, "mixup": 0.4},
    "specaug_mixup": {"kind": "cnn", **LONG, "augment": SPEC, "mixup": 0.4},
    "warp_mixup": {"kind": "cnn", **LONG, "augment": WARP, "mixup": 0.4},
    "attention": {"kind": "cnn", **LONG, "pooling": "attention"},
    "attention_specaug_mixup": {"kind": "cnn", **LONG, "pooling": "attention", "augment": SPEC, "mixup": 0.4},
    "bilstm_attention_specaug_mixup": {
        "kind": "cnn_lstm",
        **LONG,
        "pooling": "attention",
        "bidirectional": True,
        "augment": SPEC,
        "mixup": 0.4,
    },
}


def fold_score(job: tuple[str, str, int, int]) -> float:
    """Validation-actor accuracy of one configuration on one fold (test actors unread)."""
    name, subset, fold, frames = job
    data = load_dataset(FEATURES, ["handmade"], True)
    data = data.subset(data.labels.index.isin(select_subset(data.labels, subset).index))
    y = data.labels["emotion"].to_numpy()
    split = make_splits(data.labels, "actor-kfold", n_folds=6, n_val_actors=2)[fold]
    settings = {k: v for k, v in CONFIGS[name].items() if k != "kind"}
    model = build_model(CONFIGS[name]["kind"], {**settings, "n_threads": 1})

    def inputs(rows: np.ndarray) -> dict[str, Any]:
        X = data.inputs(rows, ["handmade"], True)
        return {**X, "logmel": X["logmel"][:, :, :frames]}

    model.fit(inputs(split.train), y[split.train])  # early stopping on a carved 10 % of these clips
    return float(np.mean(model.predict(inputs(split.val)) == y[split.val]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--subsets", default="all,speech")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--frames", type=int, default=160)
    args = parser.parse_args()
    data_dir = Path(os.environ.get("RAVDESS_DIR", ROOT.parent / "shared" / "ravdess"))
    featurize_data(data_dir, FEATURES, load_params(ROOT / "params.yaml"), ["handmade", "egemaps", "logmel"])
    store = json.loads(STORE.read_text()) if STORE.exists() else {"results": {}}
    names, subsets = args.configs.split(","), args.subsets.split(",")
    jobs = [(n, s, f, args.frames) for s in subsets for n in names for f in range(6)]
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        scores = list(pool.map(fold_score, jobs))
    minutes = (time.perf_counter() - started) / 60
    for (name, subset, fold, _), score in zip(jobs, scores, strict=True):
        entry = store["results"].setdefault(f"{subset}/{name}", {"config": CONFIGS[name], "folds": {}})
        entry["folds"][str(fold)] = score
    command = f"python benchmarks/deep_explore.py --workers {args.workers} --subsets {args.subsets} "
    command += f"--configs {args.configs} --frames {args.frames}"
    store.setdefault("commands", []).append(f"{command}  # {minutes:.1f} min")
    write_text(STORE, json.dumps(store, indent=1))
    write_text(REPORT, render(store))
    print(render(store))


def render(store: dict[str, Any]) -> str:
    """The report: one row per subset × configuration, and deltas against the plain CNN."""
    rows, by = [], {}
    for key, entry in sorted(store["results"].items()):
        subset, name = key.split("/")
        folds = list(entry["folds"].values())
        by[(subset, name)] = float(np.mean(folds))
        settings = {k: v for k, v in entry["config"].items() if k not in ("kind",)}
        rows.append(
            {
                "subset": subset,
                "config": name,
                "kind": entry["config"]["kind"],
                "settings": ", ".join(f"{k}={v}" for k, v in settings.items()),
                "folds": len(folds),
                "val accuracy": round(float(np.mean(folds)), 3),
                "sd": round(float(np.std(folds)), 3),
            }
        )
    deltas = [
        f"{name} over base_long, {subset}: {by[(subset, name)] - by[(subset, 'base_long')]:+.3f}"
        for subset, name in sorted(by)
        if name not in ("base", "base_long") and (subset, "base_long") in by
    ]
    return "\n".join(
        [
            "# Deep-model configurations tried on validation actors",
            "",
            "Commands (`benchmarks/deep_explore.py`; results accumulate in reports/deep_explore.json):",
            "",
            *[f"    {c}" for c in store.get("commands", [])],
            "",
            "Each configuration is fitted on the training actors of each actor-kfold fold (early",
            "stopping on a stratified 10 % of their clips) and scored on that fold's 2 validation",
            "actors; the test actors are never read. Mean ± sd over folds. All nets read the",
            f"hand-made statistics branch as in params.yaml. {len(rows)} configurations × subsets.",
            "",
            "Differences of pooled validation accuracy:",
            "",
            *[f"- {line}" for line in deltas],
            "",
            format_table(rows, ["subset", "config", "kind", "settings", "folds", "val accuracy", "sd"]),
            "",
        ]
    )


if __name__ == "__main__":
    main()
