"""The configurations tried before fixing params.yaml's models, scored on validation actors only.

    python benchmarks/accuracy_explore.py [--workers 2]

For each actor-kfold fold (6 folds of 2 test actors, on the real RAVDESS sample in RAVDESS_DIR),
a configuration is fitted on the training actors and scored on the fold's 2 *validation*
actors; the test actors are never read. The score of a configuration is the validation
accuracy pooled over the folds, which is what chose the settings in params.yaml. Classical
models only (seconds per fold): the deep models were not tuned. Writes
reports/accuracy_explore.md and reports/accuracy_explore.json (read by benchmarks/accuracy.py).
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

from components.evaluation.dataset import Dataset, load_dataset
from components.evaluation.metrics import format_table
from components.evaluation.normalize import normalize_per_speaker
from components.evaluation.protocols import make_splits, select_subset
from components.models import build_model
from components.runtime.files import write_text
from components.settings import load_params
from flows.featurize import featurize_data

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ROOT / ".ser-cache" / "ravdess-features"
HM_EG = ["handmade", "egemaps"]


def configurations() -> list[dict[str, Any]]:
    """Every configuration tried: a model kind, its settings, its feature sets."""
    configs = []
    for C in (1.0, 3.0, 10.0, 30.0, 100.0):
        for gamma in ("scale", "half"):  # half: 0.5 / n_features, a wider kernel than sklearn's "scale"
            configs.append({"kind": "svm", "features": HM_EG, "C": C, "gamma": gamma})
    for features in (["handmade"], ["egemaps"], [], ["egemaps", "lms"], [*HM_EG, "lms"]):
        configs.append({"kind": "svm", "features": features or ["lms"], "C": 10.0})
    for C in (0.01, 0.1, 1.0):
        for features in (HM_EG, [*HM_EG, "lms"]):
            configs.append({"kind": "logreg", "features": features, "C": C})
    for features in (HM_EG, [*HM_EG, "lms"]):
        configs.append({"kind": "mlp", "features": features})
        for members in (("svm", "logreg"), ("svm", "logreg", "mlp")):
            configs.append({"kind": "vote", "features": features, "members": members})
    configs.append({"kind": "rf", "features": [*HM_EG, "lms"], "n_estimators": 200})
    return configs


def model_for(config: dict[str, Any], n_features: int) -> Any:
    """A fresh estimator of the pipeline's own kinds for ``config``."""
    lms = "lms" in config["features"]
    kind = config["kind"]
    if kind == "vote":
        member = {"svm": {"C": 10.0}, "logreg": {"C": 0.1}, "mlp": {}}
        sets = [s for s in config["features"] if s != "lms"]
        members = {
            m: {"kind": m, "features": sets, **member[m], "logmel_stats": lms} for m in config["members"]
        }
        return build_model("ensemble", {"members": members})
    settings = {k: v for k, v in config.items() if k not in ("kind", "features")}
    if settings.get("gamma") == "half":
        settings["gamma"] = 0.5 / n_features
    return build_model(kind, {**settings, "logmel_stats": lms})


def inputs(data: Dataset, rows: np.ndarray, features: list[str]) -> dict[str, Any]:
    sets = [s for s in features if s != "lms"]
    X = data.inputs(rows, sets, "lms" in features)
    if not sets:
        X["stats"] = None
    return X


def validation_scores(job: tuple) -> list[float]:
    """Validation-actor accuracy of one configuration on every fold (test actors unread)."""
    config, subset, norm = job
    data = load_subset(subset, norm)
    y = data.labels["emotion"].to_numpy()
    splits = make_splits(data.labels, "actor-kfold", n_folds=6, n_val_actors=2)
    scores = []
    for split in splits:
        X = inputs(data, split.train, config["features"])
        n_features = 0 if X["stats"] is None else X["stats"].shape[1]
        model = model_for(config, n_features)
        model.fit(X, y[split.train])
        predicted = model.predict(inputs(data, split.val, config["features"]))
        scores.append(float(np.mean(predicted == y[split.val])))
    return scores


def load_subset(subset: str, norm: str) -> Dataset:
    data = load_dataset(FEATURES, HM_EG, True)
    data = data.subset(data.labels.index.isin(select_subset(data.labels, subset).index))
    if norm == "speaker":
        return data.normalized_per_speaker()
    if norm == "speaker×channel":  # speech and song of one actor normalised apart
        labels = data.labels
        groups = labels["actor"].to_numpy() * 10 + labels["vocal_channel"].to_numpy()
        stats = {name: normalize_per_speaker(values, groups) for name, values in data.stats.items()}
        return Dataset(labels, stats, data.logmel)
    return data


def describe(config: dict[str, Any]) -> str:
    settings = {k: v for k, v in config.items() if k not in ("kind", "features", "members")}
    text = config["kind"] + ("(" + "+".join(config["members"]) + ")" if "members" in config else "")
    return text + "".join(f" {k}={v}" for k, v in settings.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    data_dir = Path(os.environ.get("RAVDESS_DIR", ROOT.parent / "shared" / "ravdess"))
    settings = load_params(ROOT / "params.yaml")
    featurize_data(data_dir, FEATURES, settings, feature_sets=["handmade", "egemaps", "logmel"])
    jobs = [
        (c, subset, norm)
        for subset in ("speech", "all")
        for norm in ("none", "speaker")
        for c in configurations()
    ]
    lms = [*HM_EG, "lms"]
    jobs += [
        ({"kind": k, "features": lms, "C": c}, "all", "speaker×channel")
        for k, c in (("svm", 10.0), ("logreg", 0.1))
    ]
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        scores = list(pool.map(validation_scores, jobs))
    rows = [
        {
            "subset": subset,
            "norm": norm,
            "model": describe(config),
            "features": "+".join(config["features"]),
            "val accuracy": float(np.mean(s)),
            "sd": float(np.std(s)),
        }
        for (config, subset, norm), s in zip(jobs, scores, strict=True)
    ]
    by = {(r["subset"], r["norm"], r["model"], r["features"]): r["val accuracy"] for r in rows}
    findings = summarise(by)
    command = f"python benchmarks/accuracy_explore.py --workers {args.workers}"
    minutes = (time.perf_counter() - started) / 60
    report = "\n".join(
        [
            "# Configurations tried on validation actors",
            "",
            f"`{command}` ({minutes:.1f} min). Each configuration is fitted on the training actors of each",
            "actor-kfold fold and scored on that fold's 2 validation actors (never its test actors);",
            "mean ± sd over the 6 folds. `lms`: the log-mel functionals (`logmel_stats: true`).",
            f"{len(rows)} configurations.",
            "",
            "Findings (differences of pooled validation accuracy):",
            "",
            *[f"- {line}" for line in findings],
            "",
            format_table(
                [{**r, "val accuracy": round(r["val accuracy"], 3), "sd": round(r["sd"], 3)} for r in rows],
                ["subset", "norm", "model", "features", "val accuracy", "sd"],
            ),
            "",
        ]
    )
    write_text(ROOT / "reports" / "accuracy_explore.md", report)
    summary = {"command": command, "n_configs": len(rows), "findings": findings, "rows": rows}
    write_text(ROOT / "reports" / "accuracy_explore.json", json.dumps(summary, indent=1))
    print(report)


def summarise(by: dict[tuple, float]) -> list[str]:
    """The comparisons that fixed params.yaml, as measured differences."""
    lines = []
    combos = [(s, n) for s in ("speech", "all") for n in ("none", "speaker")]

    def compare(what: str, a: tuple[str, str], b: tuple[str, str], combos_: list = combos) -> None:
        parts = [
            f"{s}/{n} {by[(s, n, *a)] - by[(s, n, *b)]:+.3f}"
            for s, n in combos_
            if (s, n, *a) in by and (s, n, *b) in by
        ]
        lines.append(f"{what}: " + ", ".join(parts))

    hm_eg, lms = "handmade+egemaps", "handmade+egemaps+lms"
    for s in ("speech", "all"):
        a, b = by[(s, "speaker", "svm C=10.0", lms)], by[(s, "none", "svm C=10.0", lms)]
        lines.append(f"per-speaker normalisation, svm on {lms}, {s}: {a - b:+.3f}")
    compare("log-mel functionals added, svm", ("svm C=10.0", lms), ("svm C=10.0 gamma=scale", hm_eg))
    compare("log-mel functionals added, logreg C=0.1", ("logreg C=0.1", lms), ("logreg C=0.1", hm_eg))
    compare(
        "log-mel functionals added, vote svm+logreg+mlp",
        ("vote(svm+logreg+mlp)", lms),
        ("vote(svm+logreg+mlp)", hm_eg),
    )
    compare("logreg C=0.1 instead of 1.0", ("logreg C=0.1", hm_eg), ("logreg C=1.0", hm_eg))
    compare("svm C=100 instead of 10", ("svm C=100.0 gamma=scale", hm_eg), ("svm C=10.0 gamma=scale", hm_eg))
    compare(
        "svm gamma 0.5/n instead of scale",
        ("svm C=10.0 gamma=half", hm_eg),
        ("svm C=10.0 gamma=scale", hm_eg),
    )
    compare("vote svm+logreg+mlp over svm alone", ("vote(svm+logreg+mlp)", lms), ("svm C=10.0", lms))
    compare("vote svm+logreg+mlp over svm+logreg", ("vote(svm+logreg+mlp)", lms), ("vote(svm+logreg)", lms))
    compare("random forest instead of svm", ("rf n_estimators=200", lms), ("svm C=10.0", lms))
    for model in ("svm C=10.0", "logreg C=0.1"):
        a = by.get(("all", "speaker×channel", model, lms))
        if a is not None:
            delta = a - by[("all", "speaker", model, lms)]
            lines.append(f"speaker×channel instead of speaker normalisation, {model}, all: {delta:+.3f}")
    return lines


if __name__ == "__main__":
    main()
