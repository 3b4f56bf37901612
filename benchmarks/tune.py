"""Optuna search of ``ensemble_compare``'s settings on validation actors, every trial logged to MLflow.

    python benchmarks/tune.py [--trials 24] [--workers 2] [--tracking-uri URI]

Searches the svm's C and kernel width, the ComParE logistic regression's C and the vote's weight
of that member (TPE, seed 0). Trial 0 is params.yaml's ``ensemble_compare`` itself, so the study
says whether the search beat it. A trial's score is the validation-actor accuracy pooled over the
6 actor-kfold folds, averaged over the speech and all subsets (no speaker normalisation): each
configuration is fitted on a fold's training actors and scored on its 2 validation actors, the
test actors are never read, as in benchmarks/compare_explore.py. Needs the sample's ``compare``
features (run benchmarks/compare_explore.py once). Each trial is a child run of one parent run in
the MLflow experiment ``<tracking.experiment>-tuning`` of the project's store (or
``--tracking-uri``). Writes reports/tune.md.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from components.evaluation.dataset import Dataset, load_dataset
from components.evaluation.metrics import format_table
from components.evaluation.protocols import make_splits, select_subset
from components.models import build_model
from components.runtime.files import write_text
from components.settings import load_params

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ROOT / ".ser-cache" / "ravdess-features"  # shared with the other explore benchmarks
REPORT = ROOT / "reports" / "tune.md"
SUBSETS = ("speech", "all")
SETS_ORDER = ["handmade", "egemaps", "compare"]  # the column order of the members' feature sets
_DATA: dict[str, Dataset] = {}  # each worker's subsets, loaded once


def load(sets: list[str]) -> None:
    """Pool initialiser: the subsets' features, read once per worker."""
    data = load_dataset(FEATURES, sets, False)
    for subset in SUBSETS:
        _DATA[subset] = data.subset(data.labels.index.isin(select_subset(data.labels, subset).index))


def section_for(values: dict[str, float], base: dict[str, Any]) -> dict[str, Any]:
    """``ensemble_compare``'s params section with a trial's values written in."""
    svm, logreg = dict(base["members"]["svm"]), dict(base["members"]["logreg_compare"])
    n_svm_features = values["n_svm_features"]
    svm.update(C=values["svm_C"], gamma=values["svm_gamma_factor"] / n_svm_features)
    logreg.update(C=values["logreg_C"])
    weight = values["logreg_weight"]
    return {
        "members": {"svm": svm, "logreg_compare": logreg},
        "weights": {"svm": 1.0 - weight, "logreg_compare": weight},
    }


def fold_score(job: tuple[dict[str, Any], str, int]) -> float:
    """Validation-actor accuracy of one ensemble section on one fold of one subset."""
    section, subset, fold = job
    data = _DATA[subset]
    y = data.labels["emotion"].to_numpy()
    split = make_splits(data.labels, "actor-kfold", n_folds=6, n_val_actors=2)[fold]
    sets = sorted({s for m in section["members"].values() for s in m["features"]}, key=SETS_ORDER.index)
    model = build_model("ensemble", section).fit(data.inputs(split.train, sets, False), y[split.train])
    return float(np.mean(model.predict(data.inputs(split.val, sets, False)) == y[split.val]))


def main() -> None:
    import mlflow
    import optuna
    from mlflow import MlflowClient

    from components.tracking.runs import experiment_id, start_run, store_uri

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tracking-uri", default=None)
    args = parser.parse_args()
    settings = load_params(ROOT / "params.yaml")
    base = settings["ensemble_compare"]
    if not (FEATURES / "compare.parquet").exists():
        raise SystemExit(f"{FEATURES / 'compare.parquet'}: missing; run benchmarks/compare_explore.py first")
    n_svm = sum(
        load_dataset(FEATURES, [s], False).stats[s].shape[1] for s in base["members"]["svm"]["features"]
    )
    tracking = {**settings["tracking"], "experiment": settings["tracking"]["experiment"] + "-tuning"}
    tracking["artifact_location"] = str(ROOT / tracking["artifact_location"])
    client = MlflowClient(
        args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or store_uri(tracking, ROOT)
    )
    experiment = experiment_id(client, tracking)
    parent = start_run(client, experiment, "optuna ensemble_compare", tags={"benchmark": "tune"})
    mlflow.set_tracking_uri(client.tracking_uri)  # optuna's own imports may read it; runs use the client

    pool = ProcessPoolExecutor(args.workers, initializer=load, initargs=(SETS_ORDER,))
    rows: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        values = {
            "svm_C": trial.suggest_float("svm_C", 1.0, 100.0, log=True),
            "svm_gamma_factor": trial.suggest_float("svm_gamma_factor", 0.25, 4.0, log=True),
            "logreg_C": trial.suggest_float("logreg_C", 1e-3, 1e-1, log=True),
            "logreg_weight": trial.suggest_float("logreg_weight", 0.2, 0.8),
        }
        section = section_for({**values, "n_svm_features": n_svm}, base)
        jobs = [(section, subset, fold) for subset in SUBSETS for fold in range(6)]
        scores = np.array(list(pool.map(fold_score, jobs))).reshape(len(SUBSETS), 6)
        by_subset = {subset: float(scores[i].mean()) for i, subset in enumerate(SUBSETS)}
        score = float(np.mean(list(by_subset.values())))
        run = start_run(client, experiment, f"trial {trial.number}", parent=parent)
        for key, value in values.items():
            client.log_param(run, key, value)
        for subset, value in by_subset.items():
            client.log_metric(run, f"val_accuracy_{subset}", value)
        client.log_metric(run, "val_accuracy", score)
        client.set_terminated(run)
        rows.append({"trial": trial.number, **{k: round(v, 4) for k, v in values.items()}, **by_subset})
        rows[-1] |= {"score": score}
        return score

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    svm, logreg = base["members"]["svm"], base["members"]["logreg_compare"]
    study.enqueue_trial(  # trial 0: params.yaml as it is (gamma "scale" = 1/n_features on scaled inputs)
        {"svm_C": svm["C"], "svm_gamma_factor": 1.0, "logreg_C": logreg["C"], "logreg_weight": 0.5}
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    try:
        study.optimize(objective, n_trials=args.trials)
    finally:
        pool.shutdown()
    minutes = (time.perf_counter() - started) / 60
    best = study.best_trial
    for key, value in best.params.items():
        client.log_param(parent, f"best_{key}", value)
    client.log_metric(parent, "best_val_accuracy", best.value)
    client.log_metric(parent, "baseline_val_accuracy", study.trials[0].value)
    client.set_terminated(parent)
    command = f"python benchmarks/tune.py --trials {args.trials} --workers {args.workers}"
    report = render(rows, best, study.trials[0].value, command, minutes, client.tracking_uri, parent)
    write_text(REPORT, report)
    print(report)


def render(rows: list, best: Any, baseline: float, command: str, minutes: float, uri: str, run: str) -> str:
    """The report: the best trial against params.yaml's settings, then every trial."""
    table = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()} for row in rows]
    return "\n".join(
        [
            "# Optuna search of ensemble_compare on validation actors",
            "",
            f"`{command}` ({minutes:.1f} min, {len(rows)} trials, TPE seed 0). Score: validation-actor",
            "accuracy pooled over the 6 actor-kfold folds, mean of speech and all, no speaker",
            "normalisation; test actors never read. Trial 0 is params.yaml's ensemble_compare.",
            f"Logged to MLflow ({uri}), parent run {run}, one child run per trial.",
            "",
            f"Best: trial {best.number}, score {best.value:.3f} against {baseline:.3f} for params.yaml "
            f"({best.value - baseline:+.3f}): "
            + ", ".join(f"{k} {v:.4g}" for k, v in best.params.items())
            + ".",
            "",
            format_table(table, list(table[0])),
            "",
        ]
    )


if __name__ == "__main__":
    main()
