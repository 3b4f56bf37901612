"""Ad hoc evaluation outside DVC: ``ser evaluate DATA`` runs the train stage's scoring code.

DATA is a folder or zip of RAVDESS audio; its features are cached (incrementally) in a
folder so repeated evaluations extract only new clips.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from components.evaluate import Evaluation, ModelSpec
from components.features.sets import SCALAR_SETS
from flows.featurize import featurize_data
from flows.train import evaluate_model, results_table


def needed_sets(specs: list[ModelSpec]) -> list[str]:
    """The feature sets a list of models reads."""
    sets = {name for spec in specs for name in spec.stats_sets}
    if any(spec.uses_logmel for spec in specs):
        sets.add("logmel")
    return [name for name in (*SCALAR_SETS, "logmel") if name in sets]


def evaluate_data(
    data: Path,
    features_dir: Path,
    settings: dict[str, Any],
    models: list[str],
    runs: list[dict[str, str]],
    n_workers: int = 1,
) -> tuple[list[Evaluation], list[dict[str, Any]]]:
    """Featurize ``data`` into ``features_dir`` and score each model under each protocol/subset.

    Returns:
        The evaluations and one results row per model × protocol × subset.
    """
    specs = [ModelSpec.from_params(name, settings[name]) for name in models]
    featurize_data(data, features_dir, settings, feature_sets=needed_sets(specs))
    n_threads = max(1, (os.cpu_count() or 1) // n_workers)
    jobs = [
        (spec, features_dir, run["protocol"], run["subset"], settings["evaluate"], n_threads)
        for spec in specs
        for run in runs
    ]
    if n_workers > 1:
        with ProcessPoolExecutor(n_workers) as pool:
            results = list(pool.map(_evaluate, jobs))
    else:
        results = [_evaluate(job) for job in jobs]
    return results, results_table(results, settings["evaluate"]["primary_metric"])


def _evaluate(job: tuple) -> Evaluation:
    return evaluate_model.fn(*job)
