"""Several corpora in one table of model inputs, and scoring a model within and across them.

Each corpus's feature tables store its own speaker numbers and native label codes;
:func:`combine` joins them with the corpora's clip tables, numbers the speakers so that no two
corpora share one, optionally normalises the features (per speaker or per corpus, with no
labels), and maps the labels onto the shared set (``components.data.corpora.label_map``),
counting the clips whose label maps to nothing. :func:`score` fits and scores a model on each
split of a protocol (``components.evaluation.protocols``); :func:`matrix_cells` and
:func:`plot_matrices` turn the scores into the cross-corpus matrix and its heat maps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from components.data.corpora import get_corpus
from components.data.corpora.label_map import LabelMap, apply_label_map
from components.data.ravdess import EMOTIONS
from components.errors import SerError
from components.evaluation.dataset import Dataset
from components.evaluation.evaluate import ModelSpec, fit_on_rows
from components.evaluation.metrics import compute_metrics, summarize_folds
from components.evaluation.normalize import normalize_per_speaker
from components.evaluation.protocols import Split

NORMALIZATIONS: tuple[str, ...] = ("none", "speaker", "corpus")
CORPUS_PROTOCOLS: tuple[str, ...] = ("cross-corpus", "leave-one-corpus-out")  # scored as a matrix


def combine(
    datasets: Mapping[str, Dataset],
    clip_tables: Mapping[str, pd.DataFrame],
    label_map: LabelMap | None,
    normalization: str = "none",
    open_sets: Iterable[str] = (),
) -> tuple[Dataset, dict[str, dict[str, int]]]:
    """One dataset of several corpora, labelled in one label set.

    Args:
        datasets: Per corpus, its features as :func:`components.evaluation.dataset.load_dataset`
            read them (scalar sets only; the same sets for every corpus).
        clip_tables: Per corpus, its clip table (``components.data.corpora.base.clip_table``).
        label_map: The shared label set; None keeps one corpus's native labels and codes
            (EmoDB's 7, RAVDESS's 8), each ``label`` its English name (``anger`` for ``W``).
        normalization: ``none``, ``speaker`` (z-score each speaker's clips; needs speakers) or
            ``corpus`` (z-score each corpus's clips). Done on every clip before any is left out,
            so no label is used.
        open_sets: Corpora whose labels are an open set (a user's own data).

    Returns:
        ``(data, left_out)``: labels carry ``corpus``, ``speaker``, ``native_label``, ``label``,
        ``emotion`` (the label's code) and ``actor`` (unique across corpora; -1 unknown); and
        per corpus the clips left out by native label.

    Raises:
        SerError: No corpora, sets that differ, native labels for several corpora, an unknown
            normalisation, or speakers unknown for ``speaker``.
    """
    if not datasets:
        raise SerError("no corpora to combine")
    if normalization not in NORMALIZATIONS:
        raise SerError(f"unknown normalisation {normalization!r}: choose one of {', '.join(NORMALIZATIONS)}")
    if label_map is None and len(datasets) > 1:
        raise SerError(
            f"native labels are one corpus's own: {', '.join(sorted(datasets))} are scored on the "
            "shared label set (--label-set shared)"
        )
    names = sorted(datasets)
    sets = [sorted(datasets[name].stats) for name in names]
    if any(s != sets[0] for s in sets):
        raise SerError(
            f"the corpora were featurized with different sets: {dict(zip(names, sets, strict=True))}"
        )
    labels, stats = [], {key: [] for key in sets[0]}
    for name in names:
        data = datasets[name]
        info = clip_tables[name].set_index("clip_id")[["corpus", "speaker", "native_label"]]
        missing = sorted(set(data.labels["clip_id"]) - set(info.index))
        if missing:
            raise SerError(
                f"{name}: {len(missing)} featurized clip(s) are not in its clip table, e.g. {missing[0]}"
            )
        table = data.labels[["clip_id", "actor", "emotion", "gender"]].join(info, on="clip_id")
        labels.append(table)
        for key in stats:
            stats[key].append(data.stats[key])
    table = pd.concat(labels, ignore_index=True)
    merged = {key: np.vstack(parts) for key, parts in stats.items()}
    if len(names) > 1:  # speaker numbers of two corpora may coincide (RAVDESS 03, EmoDB 03)
        known = table["speaker"] != ""
        pairs = table["corpus"] + "/" + table["speaker"]
        order = {pair: i + 1 for i, pair in enumerate(sorted(pairs[known].unique()))}
        table["actor"] = [order[p] if k else -1 for p, k in zip(pairs, known, strict=True)]
    if normalization == "speaker":
        if (table["actor"] < 0).any():
            raise SerError("speaker normalisation needs every clip's speaker; some are unknown (use corpus)")
        merged = {key: normalize_per_speaker(v, table["actor"].to_numpy()) for key, v in merged.items()}
    elif normalization == "corpus":
        merged = {key: normalize_per_speaker(v, table["corpus"].to_numpy()) for key, v in merged.items()}
    if label_map is None:
        corpus = get_corpus(names[0])
        table["label"] = [corpus.label_name(native) for native in table["native_label"]]
        return Dataset(table, merged), {}
    mapped, left_out = apply_label_map(table, label_map, open_sets)
    rows = mapped.index.to_numpy()
    return Dataset(mapped.reset_index(drop=True), {k: v[rows] for k, v in merged.items()}), left_out


MIN_CLASS_CLIPS = 5  # the SVM's probability calibration cross-validates 5-fold: 5 clips of each class


def score(
    spec: ModelSpec, data: Dataset, splits: Sequence[Split], min_class_clips: int = MIN_CLASS_CLIPS
) -> dict[str, Any]:
    """Fit ``spec`` on each split's training (and validation) rows and score its test rows.

    Each split is scored on the classes of its rows (for cross-corpus splits, the labels both
    sides have); UAR averages the classes its test rows hold. Folds scored on the same classes
    are summarised (mean ± sd). A class with fewer than ``min_class_clips`` training clips in
    a split is not trained on there (small corpora: EmoDB's sample has 12 disgust clips, 8 of
    one speaker); its test clips still count, as misses, and the split records it. Classes are
    named by the rows' ``label`` (shared or native: see :func:`combine`), else RAVDESS's names.

    Returns:
        ``folds`` (name, train and test corpora, n_train, n_test, the metrics of each split and
        of each test corpus apart, classes not trained on, the test rows and their predictions),
        ``summary`` (:func:`components.evaluation.metrics.summarize_folds`, or None when the
        folds' classes differ) and ``seconds``.

    Raises:
        SerError: The model reads log-mel sequences (only scalar feature sets are combined).
    """
    if spec.uses_logmel:
        raise SerError(f"{spec.name}: corpora are combined on scalar feature sets; this model reads log-mel")
    started = time.perf_counter()
    y = data.labels["emotion"].to_numpy()
    corpus = data.labels["corpus"].to_numpy()
    labels = data.labels["label"] if "label" in data.labels.columns else data.labels["emotion"].map(EMOTIONS)
    names = {int(code): str(label) for code, label in zip(y, labels, strict=True)}
    folds = []
    for split in splits:
        train = split.train if spec.early_stops else np.union1d(split.train, split.val)
        classes = sorted(set(y[train]) | set(y[split.test]))  # a test speaker may lack a class
        counts = dict(zip(*np.unique(y[train], return_counts=True), strict=True))
        untrained = sorted(int(c) for c, n in counts.items() if n < min_class_clips)
        train = train[~np.isin(y[train], untrained)]
        model = fit_on_rows(spec, data, train, split.val)
        predicted = model.predict(data.inputs(split.test, spec.stats_sets, spec.uses_logmel))
        metrics = compute_metrics(y[split.test], predicted, classes=classes, names=names)
        tested = corpus[split.test]
        by_corpus = {
            name: compute_metrics(
                y[split.test][tested == name], predicted[tested == name], classes=classes, names=names
            )
            for name in sorted(set(tested))
        }
        folds.append(
            {
                "name": split.name,
                "by_corpus": by_corpus,
                "train_corpora": sorted(set(corpus[train])),
                "test_corpora": sorted(set(corpus[split.test])),
                "n_train": len(train),
                "n_test": len(split.test),
                "metrics": metrics,
                "untrained": [names[c] for c in untrained],
                "test": split.test,
                "predicted": predicted,
            }
        )
    same = len({tuple(f["metrics"]["classes"]) for f in folds}) == 1
    summary = summarize_folds([f["metrics"] for f in folds]) if folds and same else None
    return {"folds": folds, "summary": summary, "seconds": time.perf_counter() - started}


def joint_speaker_folds(labels: pd.DataFrame, n_folds: int) -> list[Split]:
    """Folds over several corpora trained together: fold ``i`` tests slice ``i`` of every corpus's
    sorted speakers (as :func:`components.evaluation.protocols.actor_kfold` cuts them), so each
    corpus is scored on held-out speakers of its own while training sees every corpus.

    Raises:
        SerError: A corpus has fewer speakers than folds, or unknown speakers.
    """
    if (labels["actor"] < 0).any():
        raise SerError("joint folds need every clip's speaker; some are unknown")
    test_groups: list[list[int]] = [[] for _ in range(n_folds)]
    for name, actors in labels.groupby("corpus")["actor"]:
        present = sorted(int(a) for a in actors.unique())
        if len(present) < n_folds:
            raise SerError(f"{name} has {len(present)} speaker(s), fewer than {n_folds} folds")
        for i, group in enumerate(np.array_split(present, n_folds)):
            test_groups[i] += [int(a) for a in group]
    actors = labels["actor"].to_numpy()
    splits = []
    for i, group in enumerate(test_groups):
        test = np.isin(actors, group)
        empty = np.array([], dtype=np.int64)
        splits.append(
            Split(f"fold-{i + 1}", np.flatnonzero(~test), empty, np.flatnonzero(test), tuple(sorted(group)))
        )
    return splits


def corpus_summary(scored: dict[str, Any], corpus: str) -> dict[str, Any]:
    """Mean ± sd over the folds that tested ``corpus``, of its own test clips' metrics."""
    return summarize_folds([f["by_corpus"][corpus] for f in scored["folds"] if corpus in f["by_corpus"]])


def result_rows(model: str, protocol: str, scored: dict[str, Any], extra: Mapping[str, Any]) -> list[dict]:
    """Rows of a results table: the summary when there is one, else one row per split."""
    untrained = "; ".join(
        f"{f['name']}: {', '.join(f['untrained'])}" for f in scored["folds"] if f["untrained"]
    )
    base = {"model": model, "protocol": protocol, **extra, "untrained": untrained}
    s = scored["summary"]
    if s is not None and len(scored["folds"]) > 1:
        sd = {
            k: (round(s[f"{k}_sd"], 4) if s[f"{k}_sd"] == s[f"{k}_sd"] else None) for k in ("accuracy", "uar")
        }
        return [
            {
                **base,
                "split": f"{len(scored['folds'])} folds",
                "test": ",".join(sorted({c for f in scored["folds"] for c in f["test_corpora"]})),
                "n_test": sum(f["n_test"] for f in scored["folds"]),
                "accuracy": round(s["accuracy_mean"], 4),
                "accuracy_sd": sd["accuracy"],
                "uar": round(s["uar_mean"], 4),
                "uar_sd": sd["uar"],
                "classes": ",".join(s["class_names"]),
            }
        ]
    return [
        {
            **base,
            "split": f["name"],
            "test": ",".join(f["test_corpora"]),
            "n_test": f["n_test"],
            "accuracy": round(f["metrics"]["accuracy"], 4),
            "accuracy_sd": None,
            "uar": round(f["metrics"]["uar"], 4),
            "uar_sd": None,
            "classes": ",".join(f["metrics"]["class_names"]),
        }
        for f in scored["folds"]
    ]


# The cross-corpus matrix: rows are training corpora, columns test corpora.


def matrix_cells(model: str, scored: dict[str, Any]) -> list[dict[str, Any]]:
    """The cells of the cross-corpus matrix that :func:`score`'s splits filled, one per split and test corpus.

    Returns:
        Dicts of ``model``, ``train`` (the training corpora, joined by ``+``), ``test``, ``uar``,
        ``accuracy`` and ``n_test`` (the test corpus's clips).
    """
    return [
        {
            "model": model,
            "train": "+".join(fold["train_corpora"]),
            "test": test,
            "uar": round(float(metrics["uar"]), 4),
            "accuracy": round(float(metrics["accuracy"]), 4),
            "n_test": int(metrics["n"]),
        }
        for fold in scored["folds"]
        for test, metrics in fold["by_corpus"].items()
    ]


def matrix_grid(
    cells: Sequence[Mapping[str, Any]], model: str, metric: str
) -> tuple[list[str], list[str], np.ndarray]:
    """``(training corpora, test corpora, values)`` of one model's cells; NaN where none was scored."""
    picked = [cell for cell in cells if cell["model"] == model]
    rows = list(dict.fromkeys(cell["train"] for cell in picked))
    place = {name: i for i, name in enumerate(rows)}  # a corpus trained on alone: under its own row
    columns = sorted(dict.fromkeys(cell["test"] for cell in picked), key=lambda c: place.get(c, len(place)))
    grid = np.full((len(rows), len(columns)), np.nan)
    for cell in picked:
        grid[rows.index(cell["train"]), columns.index(cell["test"])] = cell[metric]
    return rows, columns, grid


def plot_matrices(
    panels: Sequence[tuple[str, Sequence[str], Sequence[str], np.ndarray]], n_columns: int = 2
) -> Figure:
    """Heat maps of cross-corpus matrices, ``n_columns`` to a row (made without pyplot).

    Args:
        panels: ``(title, training corpora, test corpora, values in [0, 1])`` each; NaN: not scored.
        n_columns: Panels side by side.
    """
    n_rows = max(1, math.ceil(len(panels) / n_columns))
    fig = Figure(figsize=(4.25 * n_columns, 3.6 * n_rows), layout="constrained")
    axes = list(fig.subplots(n_rows, n_columns, squeeze=False).flat)
    for ax, (title, rows, columns, grid) in zip(axes, panels, strict=False):
        ax.imshow(np.ma.masked_invalid(grid), vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(columns)), list(columns))
        ax.set_yticks(range(len(rows)), list(rows))
        ax.set_xlabel("test corpus")
        ax.set_ylabel("training corpus")
        ax.set_title(title, fontsize=9)
        for (row, column), value in np.ndenumerate(grid):
            if np.isnan(value):
                ax.text(column, row, "n/a", ha="center", va="center", color="black")
            else:  # viridis is light above 0.6
                colour = "white" if value < 0.6 else "black"
                ax.text(column, row, f"{value:.2f}", ha="center", va="center", color=colour)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    return fig


def matrix_figure(cells: Sequence[Mapping[str, Any]]) -> Figure:
    """UAR and accuracy heat maps of each model's cells (:func:`matrix_cells`), a row per model."""
    panels = []
    for model in dict.fromkeys(cell["model"] for cell in cells):
        for metric, title in (("uar", "UAR"), ("accuracy", "accuracy")):
            rows, columns, grid = matrix_grid(cells, model, metric)
            panels.append((f"{model}: {title}", rows, columns, grid))
    return plot_matrices(panels)
