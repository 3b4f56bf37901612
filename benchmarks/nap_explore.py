"""Nuisance attribute projection: project out the directions in which training speakers differ.

    python benchmarks/nap_explore.py [--dims 0,4,8,all] [--workers 2]

Per-speaker normalisation gains about 10 points but needs many clips of each new speaker. Nuisance
attribute projection (NAP, from speaker and language recognition) learns instead, from the
training actors alone, the subspace in which their mean feature vectors differ, and projects it
out of every clip: a fixed linear map, so it serves single clips of unseen speakers. For each
actor-kfold fold: the features (imputed and standardised on the training clips) of each training
actor × channel (speech, song) are averaged, the top ``k`` principal directions of those means
are removed from training and validation clips alike, the model is fitted on the training actors
and scored on the fold's 2 validation actors (test actors never read). ``k = 0`` is the plain
model; ``all``: every direction the training groups span. svm (hand-made + eGeMAPS), logreg_compare
(+ ComParE) and their soft vote (= ensemble_compare). Writes reports/nap_explore.md and .json.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from augment_explore import configurations  # sibling scripts: benchmarks/ is on sys.path
from compare_explore import accuracy_cells, map_timed, write_report

from components.evaluation.dataset import load_dataset
from components.evaluation.protocols import make_splits, select_subset
from components.models import build_model

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ROOT / ".ser-cache" / "ravdess-features"  # shared with the other explore benchmarks
SETS = ["handmade", "egemaps", "compare"]


def nap_projector(values: np.ndarray, groups: np.ndarray, fit_rows: np.ndarray, k: int | None):
    """A function mapping feature rows to NAP-projected, standardised rows, learnt on ``fit_rows`` only.

    Args:
        values: ``[n, d]`` features (NaN allowed: imputed with the fit rows' medians).
        groups: ``[n]`` nuisance group of each row (speaker, speaker × channel).
        fit_rows: Rows whose statistics are used (the training clips).
        k: Directions to remove (None: all that the group means span; 0: none).
    """
    fit = values[fit_rows]
    median = np.nanmedian(fit, axis=0)
    median = np.where(np.isnan(median), 0.0, median)
    filled = np.where(np.isnan(fit), median, fit)
    mean, sd = filled.mean(axis=0), filled.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    scaled = (filled - mean) / sd
    fit_groups = groups[fit_rows]
    means = np.stack([scaled[fit_groups == g].mean(axis=0) for g in np.unique(fit_groups)])
    _, singular, vt = np.linalg.svd(means - means.mean(axis=0), full_matrices=False)
    rank = int(np.sum(singular > singular.max() * 1e-10)) if singular.size else 0
    basis = vt[: rank if k is None else min(k, rank)]

    def project(rows: np.ndarray) -> np.ndarray:
        z = (np.where(np.isnan(rows), median, rows) - mean) / sd
        return z - (z @ basis.T) @ basis

    return project


def validation_scores(job: tuple[str, int | None]) -> dict[str, list[float]]:
    """Validation-actor accuracy of svm, logreg_compare and their vote on every fold, after NAP with ``k``."""
    subset, k = job
    configs = configurations()
    data = load_dataset(FEATURES, SETS, False)
    data = data.subset(data.labels.index.isin(select_subset(data.labels, subset).index))
    y = data.labels["emotion"].to_numpy()
    groups = data.labels["actor"].to_numpy() * 10 + data.labels["vocal_channel"].to_numpy()
    scores: dict[str, list[float]] = {"svm": [], "logreg_compare": [], "ensemble_compare": []}
    for split in make_splits(data.labels, "actor-kfold", n_folds=6, n_val_actors=2):
        probas = []
        for name in ("svm", "logreg_compare"):
            config: dict[str, Any] = configs[name]
            stats = data.inputs(None, config["features"], False)["stats"]
            project = nap_projector(stats, groups, split.train, k)
            settings = {key: v for key, v in config.items() if key not in ("kind", "features")}
            model = build_model(config["kind"], settings).fit(
                {"stats": project(stats[split.train])}, y[split.train]
            )
            proba = model.predict_proba({"stats": project(stats[split.val])})
            probas.append(proba)
            scores[name].append(float(np.mean(model.classes_[proba.argmax(axis=1)] == y[split.val])))
        vote = model.classes_[np.mean(probas, axis=0).argmax(axis=1)]
        scores["ensemble_compare"].append(float(np.mean(vote == y[split.val])))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dims", default="0,4,8,all")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    dims = [None if d == "all" else int(d) for d in args.dims.split(",")]
    jobs = [(subset, k) for subset in ("speech", "all") for k in dims]
    results, minutes = map_timed(validation_scores, jobs, args.workers)
    rows = [
        {
            "subset": subset,
            "NAP dims": "all" if k is None else k,
            "model": model,
            **accuracy_cells(s),
        }
        for (subset, k), result in zip(jobs, results, strict=True)
        for model, s in result.items()
    ]
    by = {(r["subset"], r["NAP dims"], r["model"]): r["val accuracy"] for r in rows}
    findings = [
        f"NAP removing {dims_} directions, {model}, {subset}: {score - by[(subset, 0, model)]:+.3f}"
        for (subset, dims_, model), score in by.items()
        if dims_ != 0 and (subset, 0, model) in by
    ]
    command = f"python benchmarks/nap_explore.py --dims {args.dims} --workers {args.workers}"
    heading = [
        "# Nuisance attribute projection of speaker directions, on validation actors",
        "",
        f"`{command}` ({minutes:.1f} min). The directions come from the training actors' mean feature",
        "vectors (per actor × channel) of each actor-kfold fold; models fitted on the training actors,",
        "scored on the fold's 2 validation actors (never its test actors); mean ± sd over the 6 folds;",
        f"{len(rows)} rows. `ensemble_compare`: the soft vote of the svm and logreg_compare rows.",
    ]
    write_report("nap_explore", heading, findings, rows, command)


if __name__ == "__main__":
    main()
