"""Stacking: a meta-classifier learnt on out-of-fold member probabilities, on validation actors.

    python benchmarks/stack_explore.py [--workers 2]

The pipeline's ensembles average their members' probabilities with fixed weights. Stacking
learns how to combine them instead: for each actor-kfold fold, every member is fitted on all but
one group of training actors and predicts the group left out (grouped by actor, so the
out-of-fold probabilities are speaker-independent like the test), a multinomial logistic
regression is fitted on those log-probabilities, and the members refitted on every training
actor feed it on the fold's 2 validation actors (test actors never read). Members: params.yaml's
svm, logreg, mlp, rf and logreg_compare. Compared with the soft vote of the same members and with
ensemble_compare (svm + logreg_compare). Writes reports/stack_explore.md and .json.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from compare_explore import (  # sibling script: benchmarks/ is on sys.path
    accuracy_cells,
    map_timed,
    params_configs,
    write_report,
)
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

from components.evaluation.dataset import Dataset, load_dataset
from components.evaluation.protocols import make_splits, select_subset
from components.models import build_model

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ROOT / ".ser-cache" / "ravdess-features"  # shared with the other explore benchmarks
SETS = ["handmade", "egemaps", "compare"]
MEMBERS = ["svm", "logreg", "mlp", "rf", "logreg_compare"]
PAIR = ["svm", "logreg_compare"]  # ensemble_compare's members
META_C = (0.01, 0.1, 1.0)  # the meta-classifier's regularisation; each reported


def member_probas(
    configs: dict[str, dict[str, Any]], data: Dataset, y: np.ndarray, train: np.ndarray, predict: np.ndarray
) -> dict[str, np.ndarray]:
    """Each member fitted on rows ``train``, its class probabilities on rows ``predict`` (sorted classes)."""
    probas = {}
    for name, config in configs.items():
        settings = {k: v for k, v in config.items() if k not in ("kind", "features")}
        model = build_model(config["kind"], settings)
        model.fit(data.inputs(train, config["features"], False), y[train])
        probas[name] = model.predict_proba(data.inputs(predict, config["features"], False))
    return probas


def out_of_fold_probas(
    configs: dict[str, dict[str, Any]], data: Dataset, y: np.ndarray, train: np.ndarray, n_splits: int
) -> dict[str, np.ndarray]:
    """Every member's probabilities on ``train``'s rows, each row predicted by members that never saw
    its actor (``n_splits`` groups of training actors)."""
    actors = data.labels["actor"].to_numpy()[train]
    result = {name: np.zeros((len(train), len(np.unique(y)))) for name in configs}
    for fit, held in GroupKFold(n_splits=n_splits).split(train, groups=actors):
        for name, proba in member_probas(configs, data, y, train[fit], train[held]).items():
            result[name][held] = proba
    return result


def stack_features(probas: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """The meta-classifier's input: the named members' log-probabilities side by side."""
    return np.hstack([np.log(np.clip(probas[name], 1e-6, 1.0)) for name in names])


def validation_scores(job: tuple[str, int]) -> dict[str, float]:
    """Validation-actor accuracy of each combination on fold ``index`` of subset ``subset``."""
    subset, index = job
    configs = params_configs(MEMBERS)
    data = load_dataset(FEATURES, SETS, False)
    data = data.subset(data.labels.index.isin(select_subset(data.labels, subset).index))
    y = data.labels["emotion"].to_numpy()
    classes = np.unique(y)
    split = make_splits(data.labels, "actor-kfold", n_folds=6, n_val_actors=2)[index]
    oof = out_of_fold_probas(configs, data, y, split.train, n_splits=4)
    val = member_probas(configs, data, y, split.train, split.val)
    truth = y[split.val]
    scores = {name: float(np.mean(classes[val[name].argmax(axis=1)] == truth)) for name in MEMBERS}
    for label, names in (("all five", MEMBERS), ("svm+logreg_compare", PAIR)):
        vote = np.mean([val[name] for name in names], axis=0)
        scores[f"vote {label}"] = float(np.mean(classes[vote.argmax(axis=1)] == truth))
        for C in META_C:
            meta = LogisticRegression(C=C, max_iter=2000).fit(stack_features(oof, names), y[split.train])
            predicted = meta.predict(stack_features(val, names))
            scores[f"stack {label} C={C}"] = float(np.mean(predicted == truth))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    jobs = [(subset, index) for subset in ("speech", "all") for index in range(6)]
    results, minutes = map_timed(validation_scores, jobs, args.workers)
    rows = []
    for subset in ("speech", "all"):
        folds = [r for (s, _), r in zip(jobs, results, strict=True) if s == subset]
        for name in folds[0]:
            rows.append({"subset": subset, "model": name, **accuracy_cells([fold[name] for fold in folds])})
    by = {(r["subset"], r["model"]): r["val accuracy"] for r in rows}
    findings = [
        f"{model} over vote svm+logreg_compare (= ensemble_compare), {subset}: "
        f"{score - by[(subset, 'vote svm+logreg_compare')]:+.3f}"
        for (subset, model), score in by.items()
        if model.startswith(("stack", "vote all"))
    ]
    command = f"python benchmarks/stack_explore.py --workers {args.workers}"
    heading = [
        "# Stacking the classical models, on validation actors",
        "",
        f"`{command}` ({minutes:.1f} min). For each actor-kfold fold, out-of-fold member probabilities",
        "on the training actors (4 groups of actors) train a multinomial logistic regression; members",
        "refitted on all training actors feed it on the fold's 2 validation actors (never its test",
        f"actors); mean ± sd over the 6 folds; {len(rows)} rows.",
    ]
    write_report("stack_explore", heading, findings, rows, command)


if __name__ == "__main__":
    main()
