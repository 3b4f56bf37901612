"""Per-gender feature standardisation, a deployable cousin of per-speaker normalisation, on validation actors.

    python benchmarks/gender_explore.py [--workers 2]

Per-speaker normalisation gains about 10 points but needs many clips of each new speaker. Scaling
each feature by the mean and sd of the speaker's *gender*, learnt on the training actors only,
needs nothing at prediction time but the gender, which a pitch-based classifier gets nearly always
right. This measures its upper bound first, with the true gender (RAVDESS: odd actors are male):
for each actor-kfold fold, the statistics are taken per gender over the training actors' clips,
applied to training and validation clips, and the configuration is fitted on the training actors
and scored on the fold's 2 validation actors (test actors never read). If the upper bound does
not help, a gender classifier is not worth building. Writes reports/gender_explore.md and .json.
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


def scale_by_group(values: np.ndarray, groups: np.ndarray, fit_rows: np.ndarray) -> np.ndarray:
    """``values`` standardised with the mean and sd of its group, both taken over ``fit_rows`` only.

    NaN-safe; a constant column keeps sd 1. Every group must have rows in ``fit_rows``.
    """
    out = np.empty_like(values, dtype=np.float64)
    for group in np.unique(groups):
        fit = fit_rows[groups[fit_rows] == group]
        mean = np.nanmean(values[fit], axis=0)
        sd = np.nanstd(values[fit], axis=0)
        rows = groups == group
        out[rows] = (values[rows] - mean) / np.where(sd > 0, sd, 1.0)
    return out


def validation_scores(job: tuple[dict[str, Any], str, bool]) -> list[float]:
    """Validation-actor accuracy of one configuration on every fold, with or without per-gender scaling."""
    config, subset, by_gender = job
    data = load_dataset(FEATURES, SETS, False)
    data = data.subset(data.labels.index.isin(select_subset(data.labels, subset).index))
    y = data.labels["emotion"].to_numpy()
    gender = data.labels["actor"].to_numpy() % 2  # 1 male, 0 female
    settings = {k: v for k, v in config.items() if k not in ("kind", "features")}
    scores = []
    for split in make_splits(data.labels, "actor-kfold", n_folds=6, n_val_actors=2):
        X = data.inputs(None, config["features"], False)
        if by_gender:
            X = {**X, "stats": scale_by_group(X["stats"], gender, split.train)}
        train = {**X, "stats": X["stats"][split.train]}
        val = {**X, "stats": X["stats"][split.val]}
        model = build_model(config["kind"], settings).fit(train, y[split.train])
        scores.append(float(np.mean(model.predict(val) == y[split.val])))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    configs = configurations()
    jobs = [(c, s, g) for s in ("speech", "all") for g in (False, True) for c in configs.values()]
    scores, minutes = map_timed(validation_scores, jobs, args.workers)
    names = [name for _ in range(4) for name in configs]
    rows = [
        {
            "subset": subset,
            "scaling": "per gender (true)" if by_gender else "global",
            "model": name,
            **accuracy_cells(s),
        }
        for name, (_, subset, by_gender), s in zip(names, jobs, scores, strict=True)
    ]
    by = {(r["subset"], r["scaling"], r["model"]): r["val accuracy"] for r in rows}
    findings = [
        f"per-gender scaling for {model}, {subset}: {score - by[(subset, 'global', model)]:+.3f}"
        for (subset, scaling, model), score in by.items()
        if scaling != "global"
    ]
    command = f"python benchmarks/gender_explore.py --workers {args.workers}"
    heading = [
        "# Per-gender feature standardisation (true gender: the upper bound), on validation actors",
        "",
        f"`{command}` ({minutes:.1f} min). Statistics per gender from each actor-kfold fold's training",
        "actors, applied to its training and validation clips; fitted on the training actors, scored",
        "on the fold's 2 validation actors (never its test actors); mean ± sd over the 6 folds;",
        f"{len(rows)} rows.",
        "`global`: the pipeline's own scaling (each model standardises its inputs over the training clips).",
    ]
    write_report("gender_explore", heading, findings, rows, command)


if __name__ == "__main__":
    main()
