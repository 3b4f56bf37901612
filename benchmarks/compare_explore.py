"""ComParE_2016 functionals (6373 openSMILE features) against the default sets, on validation actors.

    python benchmarks/compare_explore.py [--workers 2]

Like benchmarks/accuracy_explore.py: for each actor-kfold fold (6 folds of 2 test actors, on the
real RAVDESS sample in RAVDESS_DIR) a configuration is fitted on the fold's training actors and
scored on its 2 validation actors; the test actors are never read. Featurizes the sample's
``compare`` set into .ser-cache/ once (about 80 s of openSMILE on one core). Writes
reports/compare_explore.md and .json; their findings chose params.yaml's ``logreg_compare``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from components.evaluation.dataset import Dataset, load_dataset
from components.evaluation.evaluate import ModelSpec
from components.evaluation.metrics import format_table
from components.evaluation.protocols import make_splits, select_subset
from components.models import build_model
from components.runtime.files import write_text
from components.settings import load_params
from flows.featurize import featurize_data

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ROOT / ".ser-cache" / "ravdess-features"  # shared with benchmarks/accuracy_explore.py
HE = ["handmade", "egemaps"]
ALL_SETS = [*HE, "compare"]
MEMBERS = {
    "svm": {"kind": "svm", "features": HE, "C": 10.0},
    "logreg": {"kind": "logreg", "features": HE, "C": 0.1},
    "mlp": {"kind": "mlp", "features": HE, "hidden_layer_sizes": [256, 128]},
    "logreg_compare": {"kind": "logreg", "features": ALL_SETS, "C": 0.01},
}


def configurations() -> list[dict[str, Any]]:
    """Every configuration tried: a kind, its settings, the scalar sets it reads."""
    configs: list[dict[str, Any]] = [{"kind": "logreg", "features": HE, "C": 0.1}]  # params.yaml's logreg
    for features in (["compare"], ALL_SETS):
        configs.append({"kind": "svm", "features": features, "C": 10.0})
        configs += [{"kind": "logreg", "features": features, "C": C} for C in (0.001, 0.01)]
    for names in (("svm", "logreg", "mlp", "logreg_compare"), ("svm", "logreg_compare")):
        configs.append({"kind": "ensemble", "features": ALL_SETS, "members": {n: MEMBERS[n] for n in names}})
    return configs


def describe(config: dict[str, Any]) -> str:
    if config["kind"] == "ensemble":
        return "vote(" + "+".join(config["members"]) + ")"
    return f"{config['kind']} C={config['C']}"


def validation_scores(job: tuple[dict[str, Any], str, bool]) -> list[float]:
    """Validation-actor accuracy of one configuration on every fold (test actors unread)."""
    config, subset, norm = job
    data = load_dataset(FEATURES, ALL_SETS, False)
    return fold_scores(data, config, subset, norm)


def fold_scores(data: Dataset, config: dict[str, Any], subset: str, norm: bool) -> list[float]:
    """Validation-actor accuracy of ``config`` on every actor-kfold fold of ``data``'s ``subset`` clips,
    z-scored per speaker if ``norm``; the test actors are never read."""
    data = data.subset(data.labels.index.isin(select_subset(data.labels, subset).index))
    if norm:
        data = data.normalized_per_speaker()
    y = data.labels["emotion"].to_numpy()
    settings = {k: v for k, v in config.items() if k not in ("kind", "features")}
    scores = []
    for split in make_splits(data.labels, "actor-kfold", n_folds=6, n_val_actors=2):
        model = build_model(config["kind"], settings).fit(
            data.inputs(split.train, config["features"], False), y[split.train]
        )
        predicted = model.predict(data.inputs(split.val, config["features"], False))
        scores.append(float(np.mean(predicted == y[split.val])))
    return scores


def map_timed(function: Callable[[Any], Any], jobs: Iterable[Any], workers: int) -> tuple[list[Any], float]:
    """``function`` over ``jobs`` in ``workers`` processes: the results in order, and the minutes taken."""
    started = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        results = list(pool.map(function, jobs))
    return results, (time.perf_counter() - started) / 60


def accuracy_cells(scores: list[float]) -> dict[str, float]:
    """A report row's ``val accuracy`` (mean over folds) and ``sd`` columns."""
    return {"val accuracy": round(float(np.mean(scores)), 3), "sd": round(float(np.std(scores)), 3)}


def params_configs(names: list[str]) -> dict[str, dict[str, Any]]:
    """params.yaml's sections ``names`` as explore configurations: kind, settings, the scalar sets read."""
    settings = load_params(ROOT / "params.yaml")
    configs = {}
    for name in names:
        spec = ModelSpec.from_params(name, settings[name])
        configs[name] = {"kind": spec.kind, "features": list(spec.stats_sets), **spec.params}
    return configs


def write_report(
    name: str, heading: list[str], findings: list[str], rows: list[dict[str, Any]], command: str
) -> None:
    """reports/<name>.md (heading, the findings as a list, the table) and .json, and print the report."""
    report = "\n".join(
        [
            *heading,
            "",
            "Differences of pooled validation accuracy:",
            "",
            *[f"- {line}" for line in findings],
            "",
            format_table(rows, list(rows[0])),
            "",
        ]
    )
    write_text(ROOT / "reports" / f"{name}.md", report)
    summary = {"command": command, "n_configs": len(rows), "findings": findings, "rows": rows}
    write_text(ROOT / "reports" / f"{name}.json", json.dumps(summary, indent=1))
    print(report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    data_dir = Path(os.environ.get("RAVDESS_DIR", ROOT.parent / "shared" / "ravdess"))
    featurize_data(data_dir, FEATURES, load_params(ROOT / "params.yaml"), ["handmade", "egemaps", "compare"])
    jobs = [(c, s, n) for s in ("speech", "all") for n in (False, True) for c in configurations()]
    scores, minutes = map_timed(validation_scores, jobs, args.workers)
    rows = [
        {
            "subset": subset,
            "norm": "speaker" if norm else "none",
            "model": describe(config),
            "features": "+".join(config["features"]),
            **accuracy_cells(s),
        }
        for (config, subset, norm), s in zip(jobs, scores, strict=True)
    ]
    by = {(r["subset"], r["norm"], r["model"], r["features"]): r["val accuracy"] for r in rows}
    base = ("logreg C=0.1", "handmade+egemaps")
    findings = [
        f"{model} on {features} over logreg C=0.1 on handmade+egemaps, {s}/{n}: "
        f"{score - by[(s, n, *base)]:+.3f}"
        for (s, n, model, features), score in by.items()
        if (model, features) != base
    ]
    command = f"python benchmarks/compare_explore.py --workers {args.workers}"
    heading = [
        "# ComParE_2016 functionals tried on validation actors",
        "",
        f"`{command}` ({minutes:.1f} min). Each configuration is fitted on the training actors of each",
        "actor-kfold fold and scored on that fold's 2 validation actors (never its test actors);",
        f"mean ± sd over the 6 folds. {len(rows)} configurations × subsets × normalisations.",
    ]
    write_report("compare_explore", heading, findings, rows, command)


if __name__ == "__main__":
    main()
