"""The cross-corpus matrix as one MLflow run: a metric per cell, the matrix as a table, its heat maps.

The cells come from :func:`components.evaluation.cross_corpus.matrix_cells` (``ser evaluate
--protocol cross-corpus|leave-one-corpus-out --mlflow``) or from ``benchmarks/cross_corpus.py
--mlflow``; each is logged as ``<model>/uar.<train>_to_<test>`` and
``<model>/accuracy.<train>_to_<test>`` (``emodb+tess`` trains as ``emodb_and_tess``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from mlflow import MlflowClient

from components.errors import SerError
from components.tracking.runs import log_values, tracked_run

EXPERIMENT_SUFFIX = "-cross-corpus"  # kept apart from the train stage's experiment, as experiments/ is
TABLE_FILE = "cross_corpus_matrix.json"
FIGURE_FILE = "cross_corpus_matrix.png"
CELL_METRICS = ("uar", "accuracy")


def cell_key(cell: Mapping[str, Any], metric: str) -> str:
    """The metric name of one cell, e.g. ``svm/uar.ravdess_to_emodb``: MLflow's allowed characters only."""

    def part(name: str) -> str:
        return re.sub(r"[^\w-]+", "_", name.replace("+", "_and_"))

    return f"{cell['model']}/{metric}.{part(cell['train'])}_to_{part(cell['test'])}"


def log_matrix(
    client: MlflowClient,
    experiment: str,
    cells: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    figure: Figure,
    name: str = "cross-corpus",
    tags: Mapping[str, str] | None = None,
) -> str:
    """Log the matrix as one run: ``params``, a metric per cell, the table and the figure.

    Args:
        client: The tracking store's client.
        experiment: The run's experiment id.
        cells: Dicts with ``model``, ``train``, ``test``, ``uar``, ``accuracy`` (and any more
            columns, kept in the table).
        params: The run's params (protocol, corpora, label set, models ...).
        figure: The heat maps, logged as :data:`FIGURE_FILE`.
        name: The run name.
        tags: Tags of the run.

    Returns:
        The run id.

    Raises:
        SerError: No cells, or two cells of the same model, training and test corpora.
    """
    if not cells:
        raise SerError("no cross-corpus cells to log")
    metrics = {cell_key(cell, metric): float(cell[metric]) for cell in cells for metric in CELL_METRICS}
    if len(metrics) != len(CELL_METRICS) * len(cells):
        raise SerError("two cross-corpus cells share a model, training and test corpus: not one matrix")
    with tracked_run(client, experiment, name, tags=dict(tags or {})) as run:
        log_values(client, run, dict(params), metrics)
        client.log_table(run, pd.DataFrame(list(cells)), TABLE_FILE)
        client.log_figure(run, figure, FIGURE_FILE)
    return run
