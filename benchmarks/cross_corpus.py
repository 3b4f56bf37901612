"""Cross-corpus matrix: train on one corpus (or all together), test on each, on the shared labels.

    python benchmarks/cross_corpus.py [--corpus ravdess=PATH --corpus emodb=PATH ...]
        [--models ensemble_compare,svm] [--features .ser-cache/corpus-features] [--mlflow]

Default corpora: RAVDESS speech (RAVDESS_DIR/speech, actors 01-12) and EmoDB (EMODB_DIR,
default ../shared/emodb). Every cell is scored on the labels all the corpora share
(``data/label_map.yaml``; RAVDESS calm and surprised, EmoDB boredom are left out), with
out-of-sample predictions for every clip of the test corpus:

- diagonal: within the corpus, its own speaker-independent folds (RAVDESS 6 actor folds,
  EmoDB leave-one-speaker-out);
- off-diagonal: trained on every clip of the row's corpus, tested on the column's;
- last row: all corpora trained together, each tested on held-out speakers of its own
  (fold ``i`` holds out slice ``i`` of every corpus's speakers).

Then the gap closer: feature normalisation (none, per speaker, per corpus; no labels used) is
chosen per cell on *validation* speakers (the first ~third of each test corpus's sorted
speakers: RAVDESS 01-04, EmoDB 03 and 08) and reported on the other, *test*, speakers only.
Writes reports/cross_corpus.md, reports/cross_corpus.png (heat maps) and reports/cross_corpus.json;
with ``--mlflow`` also one MLflow run of the plain matrix and the heat maps, as ``ser evaluate
--mlflow`` logs (``flows.evaluate.log_matrix_run``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import ROOT, add_common_args, command_line, write_report
from matplotlib.figure import Figure

from components.data.corpora import get_corpus, parse_sources
from components.data.corpora.label_map import load_label_map
from components.evaluation.cross_corpus import (
    NORMALIZATIONS,
    combine,
    joint_speaker_folds,
    plot_matrices,
    score,
)
from components.evaluation.dataset import Dataset, load_dataset
from components.evaluation.evaluate import ModelSpec
from components.evaluation.metrics import compute_metrics
from components.evaluation.protocols import make_splits
from components.runtime.files import write_json
from components.settings import load_settings
from flows.evaluate import featurize_corpus, log_matrix_run, needed_sets, open_store

FEATURES = ROOT / ".ser-cache" / "corpus-features"
JOINT = "all together"


def default_sources() -> list[str]:
    """RAVDESS speech and EmoDB from RAVDESS_DIR and EMODB_DIR (default ../shared/...)."""
    ravdess = Path(os.environ.get("RAVDESS_DIR", ROOT.parent / "shared" / "ravdess")) / "speech"
    emodb = Path(os.environ.get("EMODB_DIR", ROOT.parent / "shared" / "emodb"))
    return [f"ravdess={ravdess}", f"emodb={emodb}"]


def validation_speakers(data: Dataset, corpus: str) -> set[int]:
    """The first ~third of a corpus's sorted speakers (at least one): they choose, the rest report."""
    speakers = sorted(data.labels.loc[data.labels["corpus"] == corpus, "actor"].unique())
    return set(speakers[: max(1, round(len(speakers) / 3))])


def predictions(spec: ModelSpec, data: Dataset, train: str, test: str, n_joint_folds: int) -> np.ndarray:
    """Out-of-sample predictions for every clip of ``test`` (row positions of ``data``; -1 elsewhere)."""
    corpus = data.labels["corpus"].to_numpy()
    if train == JOINT:
        splits = joint_speaker_folds(data.labels, n_joint_folds)
    elif train == test:
        folds = dict(get_corpus(test).folds)
        rows = np.flatnonzero(corpus == test)
        inner = make_splits(data.labels.iloc[rows].reset_index(drop=True), folds.pop("protocol"), **folds)
        splits = [_lift(split, rows) for split in inner]
    else:
        splits = make_splits(data.labels, "cross-corpus", train=train, test=test)
    predicted = np.full(len(data), -1)
    for fold in score(spec, data, splits)["folds"]:
        predicted[fold["test"]] = fold["predicted"]
    return predicted


def _lift(split: Any, rows: np.ndarray) -> Any:
    """A split of a sub-table as row positions of the whole table."""
    from dataclasses import replace

    return replace(split, train=rows[split.train], val=rows[split.val], test=rows[split.test])


def cell_metrics(data: Dataset, predicted: np.ndarray, corpus: str, speakers: set[int] | None) -> dict:
    """UAR and accuracy of the predictions for ``corpus``'s clips (of ``speakers`` if given)."""
    labels = data.labels
    rows = (labels["corpus"] == corpus).to_numpy()
    if speakers is not None:
        rows = rows & labels["actor"].isin(speakers).to_numpy()
    y = labels["emotion"].to_numpy()
    classes = sorted(set(y))
    metrics = compute_metrics(y[rows], predicted[rows], classes=classes)
    return {"uar": metrics["uar"], "accuracy": metrics["accuracy"], "n": int(rows.sum())}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings(ROOT / "params.yaml")
    sources = parse_sources(args.corpus or default_sources())
    names = list(sources)
    specs = [ModelSpec.from_params(m, settings.models[m].as_dict()) for m in args.models.split(",")]
    sets = needed_sets(specs)
    label_map = load_label_map(ROOT / settings.evaluate.label_map)
    tables, datasets, counts = {}, {}, {}
    for name, root in sources.items():
        tables[name], counts[name] = featurize_corpus(name, root, args.features, settings, sets)
        print(f"{name}: {counts[name]}", flush=True)
        datasets[name] = load_dataset(args.features / name, sets, logmel=False)
    result: dict[str, Any] = {"corpora": {n: str(p) for n, p in sources.items()}, "models": {}}
    for spec in specs:
        picked = {n: Dataset(d.labels, {s: d.stats[s] for s in spec.stats_sets}) for n, d in datasets.items()}
        by_norm, left_out = {}, {}
        for norm in NORMALIZATIONS:
            data, left_out = combine(picked, tables, label_map, norm)
            common = set.intersection(
                *(set(data.labels.loc[data.labels["corpus"] == n, "emotion"]) for n in names)
            )
            by_norm[norm] = data.subset(data.labels["emotion"].isin(common).to_numpy())
        classes = sorted(set(by_norm["none"].labels["label"]), key=label_map.labels.index)
        cells: dict[str, dict[str, dict[str, Any]]] = {}
        started = time.perf_counter()
        for train in [*names, JOINT]:
            for test in names:
                per_norm = {}
                for norm, data in by_norm.items():
                    predicted = predictions(spec, data, train, test, args.joint_folds)
                    val = validation_speakers(data, test)
                    test_speakers = set(data.labels.loc[data.labels["corpus"] == test, "actor"]) - val
                    per_norm[norm] = {
                        "all": cell_metrics(data, predicted, test, None),
                        "val": cell_metrics(data, predicted, test, val),
                        "test": cell_metrics(data, predicted, test, test_speakers),
                    }
                    print(f"{spec.name} {train} -> {test} {norm}: {per_norm[norm]['all']}", flush=True)
                chosen = max(NORMALIZATIONS, key=lambda n: (per_norm[n]["val"]["uar"], n == "none"))
                cells.setdefault(train, {})[test] = {"by_norm": per_norm, "chosen": chosen}
        seconds = time.perf_counter() - started
        val_speakers = {n: sorted(validation_speakers(by_norm["none"], n)) for n in names}
        speaker_names = (
            by_norm["none"].labels.drop_duplicates("actor").set_index("actor")["speaker"].to_dict()
        )
        result["models"][spec.name] = {
            "cells": cells,
            "classes": classes,
            "left_out": left_out,
            "n_clips": {n: int((by_norm["none"].labels["corpus"] == n).sum()) for n in names},
            "validation_speakers": {n: [speaker_names[a] for a in v] for n, v in val_speakers.items()},
            "seconds": round(seconds, 1),
        }
    result["counts"] = {n: {k: v for k, v in c.items() if k != "featurize"} for n, c in counts.items()}
    return result


def _label(name: str) -> str:
    return JOINT if name == JOINT else get_corpus(name).title


def render(result: dict[str, Any]) -> str:
    names = list(result["corpora"])
    lines = ["# Cross-corpus speech emotion recognition", ""]
    first = next(iter(result["models"].values()))
    corpora = ", ".join(f"{_label(n)} ({first['n_clips'][n]} clips)" for n in names)
    lines += [
        f"Corpora: {corpora}; scored on the labels they all have: **{', '.join(first['classes'])}** "
        f"(chance UAR {1 / len(first['classes']):.3f}). "
        f"Left out by `data/label_map.yaml`: {first['left_out']} (and labels not in every corpus, e.g. "
        "RAVDESS surprised). Rows: training corpus; columns: test corpus. Diagonal: within the corpus, "
        "its own speaker-independent folds (RAVDESS 6 actor folds, EmoDB leave-one-speaker-out); "
        f"'{JOINT}': every corpus trained together, each tested on held-out speakers of its own. "
        "Scores are pooled over all out-of-sample predictions of the test corpus.",
        "",
    ]
    for model, info in result["models"].items():
        cells = info["cells"]
        lines += [f"## {model}", "", "UAR / accuracy, no normalisation, all speakers of the test corpus:", ""]
        lines += ["| train \\ test | " + " | ".join(_label(n) for n in names) + " |"]
        lines += ["| --- |" + " ---: |" * len(names)]
        for train in [*names, JOINT]:
            row = [cells[train][test]["by_norm"]["none"]["all"] for test in names]
            lines += [
                f"| {_label(train)} | "
                + " | ".join(f"{c['uar']:.3f} / {c['accuracy']:.3f}" for c in row)
                + " |"
            ]
        val = ", ".join(f"{_label(n)} {', '.join(v)}" for n, v in info["validation_speakers"].items())
        lines += [
            "",
            f"Closing the gap: normalisation chosen per cell on validation speakers ({val}) by UAR, "
            "reported on the other speakers only (UAR / accuracy):",
            "",
            "| train → test | none | speaker | corpus | chosen on validation "
            "| chosen, on test speakers | none, on test speakers |",
            "| --- | ---: | ---: | ---: | --- | ---: | ---: |",
        ]
        for train in [*names, JOINT]:
            for test in names:
                cell = cells[train][test]
                by = cell["by_norm"]
                vals = " | ".join(f"{by[n]['val']['uar']:.3f}" for n in NORMALIZATIONS)
                chosen = by[cell["chosen"]]["test"]
                plain = by["none"]["test"]
                lines += [
                    f"| {_label(train)} → {_label(test)} | {vals} | {cell['chosen']} | "
                    f"{chosen['uar']:.3f} / {chosen['accuracy']:.3f} | "
                    f"{plain['uar']:.3f} / {plain['accuracy']:.3f} |"
                ]
        lines += [
            "",
            f"(none/speaker/corpus columns: UAR on the validation speakers; {info['seconds']} s)",
            "",
        ]
    lines += [
        "Normalisation z-scores the features of each speaker (`speaker`) or each corpus (`corpus`) with "
        "their own clips' statistics, no labels (components/evaluation/normalize.py); it is done on every "
        "clip before any is left out. Heat maps: reports/cross_corpus.png.",
    ]
    return "\n".join(lines) + "\n"


def figure(result: dict[str, Any]) -> Figure:
    """Each model's UAR heat maps: no normalisation, and normalisation chosen on validation speakers."""
    names = list(result["corpora"])
    rows = [*names, JOINT]
    panels = []
    for model, info in result["models"].items():
        cells = info["cells"]
        for title, pick in [
            ("no normalisation", lambda c: c["by_norm"]["none"]["all"]["uar"]),
            (
                "normalisation chosen\non validation speakers (test speakers)",
                lambda c: c["by_norm"][c["chosen"]]["test"]["uar"],
            ),
        ]:
            grid = np.array([[pick(cells[r][c]) for c in names] for r in rows])
            labels = [_label(r) for r in rows], [_label(n) for n in names]
            panels.append((f"{model}: UAR,\n{title}", *labels, grid))
    return plot_matrices(panels)


def matrix_cells(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The plain matrix (no normalisation, all speakers of the test corpus) as cells to log."""
    names = list(result["corpora"])
    cells = []
    for model, info in result["models"].items():
        for train in [*names, JOINT]:
            for test in names:
                plain = info["cells"][train][test]["by_norm"]["none"]["all"]
                scores = {"uar": round(plain["uar"], 4), "accuracy": round(plain["accuracy"], 4)}
                cells.append({"model": model, "train": train, "test": test, **scores, "n_test": plain["n"]})
    return cells


def log_to_mlflow(result: dict[str, Any], fig: Figure) -> None:
    """One MLflow run of the plain matrix and the heat maps (the store of params.yaml's tracking)."""
    first = next(iter(result["models"].values()))
    params = {
        "protocol": "cross-corpus matrix (benchmarks/cross_corpus.py)",
        "corpora": ",".join(f"{n}={p}" for n, p in result["corpora"].items()),
        "label_set": "shared",
        "classes": ",".join(first["classes"]),
        "models": ",".join(result["models"]),
        "command": command_line(),
    }
    tracking = load_settings(ROOT / "params.yaml").tracking
    cells = matrix_cells(result)
    run, experiment = log_matrix_run(cells, params, tracking, ROOT, fig, "cross-corpus benchmark")
    print(f"MLflow: run {run} in experiment {experiment}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_common_args(parser, "cross_corpus")
    parser.add_argument(
        "--corpus", action="append", help="CORPUS=PATH, repeated (default RAVDESS speech, EmoDB)"
    )
    parser.add_argument("--models", default="ensemble_compare,svm", help="params.yaml model sections")
    parser.add_argument(
        "--features", type=Path, default=FEATURES, help="feature caches, one folder per corpus"
    )
    parser.add_argument("--joint-folds", type=int, default=5, help="folds of the all-together row")
    parser.add_argument(
        "--mlflow", action="store_true", help="also log the matrix as an MLflow run (params.yaml's store)"
    )
    args = parser.parse_args()
    if args.mlflow:  # a store that cannot be used fails now, not after the measurement
        open_store(load_settings(ROOT / "params.yaml").tracking, ROOT)
    result = measure(args)
    write_json(args.out.with_suffix(".json"), result)
    fig = figure(result)
    png = args.out.with_suffix(".png")
    tmp = png.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(png)
    write_report(args.out, render(result))
    if args.mlflow:
        log_to_mlflow(result, fig)


if __name__ == "__main__":
    main()
