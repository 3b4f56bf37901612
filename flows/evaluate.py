"""Evaluation outside DVC.

``ser evaluate DATA`` cross-validates model configurations with the train stage's scoring code;
DATA is a folder or zip of RAVDESS audio whose features are cached (incrementally) in a folder,
so repeated evaluations extract only new clips. With ``CORPUS=PATH`` items (``emodb=...``) it
scores within and across corpora (:func:`evaluate_corpora`, docs/corpora.md). The ``evaluate``
flow (a deployment) scores a registered model version, as it is, on a data source.
"""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger

from components.data.discover import AudioFile, discover
from components.errors import SerError
from components.evaluation.evaluate import Evaluation, ModelSpec, results_table
from components.evaluation.metrics import plot_confusion
from components.evaluation.protocols import SUBSETS
from components.features.sets import SCALAR_SETS, SEQUENCE_SETS
from components.runtime.files import project_root
from components.settings import Settings, Tracking, load_settings
from flows import fail_cleanly
from flows.featurize import extract_features, featurize_data
from flows.train import evaluate_model


def needed_sets(specs: list[ModelSpec]) -> list[str]:
    """The feature sets a list of models reads."""
    sets = {name for spec in specs for name in spec.stats_sets}
    sets |= {spec.sequence for spec in specs if spec.uses_logmel}
    return [name for name in (*SCALAR_SETS, *SEQUENCE_SETS) if name in sets]


def evaluate_data(
    data: Path,
    features_dir: Path,
    settings: Settings,
    models: list[str],
    runs: list[tuple[str, str]],
    n_workers: int = 1,
    adapt_min_clips: int | None = None,
) -> tuple[list[Evaluation], list[dict[str, Any]]]:
    """Featurize ``data`` into ``features_dir`` and score each model under each protocol/subset.

    Args:
        data: Folder or zip of RAVDESS audio.
        features_dir: The feature cache (only new clips are extracted).
        settings: The typed settings: the model sections, ``evaluate`` (folds, metric) and
            what featurize reads.
        models: Model section names.
        runs: (protocol, subset) pairs.
        n_workers: Evaluations at once, each in its own process.
        adapt_min_clips: Score with speaker adaptation: each test actor with at least this many
            clips re-centred on the training mean (None: plain).

    Returns:
        The evaluations and one results row per model × protocol × subset.
    """
    specs = [ModelSpec.from_params(name, settings.models[name].as_dict()) for name in models]
    featurize_data(data, features_dir, settings, feature_sets=needed_sets(specs))
    n_threads = max(1, (os.cpu_count() or 1) // n_workers)
    jobs = [
        (spec, features_dir, protocol, subset, settings.evaluate, n_threads, adapt_min_clips)
        for spec in specs
        for protocol, subset in runs
    ]
    if n_workers > 1:
        with ProcessPoolExecutor(n_workers) as pool:
            results = list(pool.map(_evaluate, jobs))
    else:
        results = [_evaluate(job) for job in jobs]
    return results, results_table(results, settings.evaluate.primary_metric)


def _evaluate(job: tuple) -> Evaluation:
    return evaluate_model.fn(*job)


# Several corpora (``ser evaluate emodb=PATH ravdess=PATH --protocol cross-corpus ...``).


def featurize_corpus(
    name: str, root: Path, features_dir: Path, settings: Settings, feature_sets: list[str]
) -> tuple[Any, dict[str, Any]]:
    """Scan one corpus and featurize its clips into ``features_dir/<name>`` (incrementally).

    Returns:
        Its clip table and counts: clips, files rejected (with the first reason), featurize metrics.
    """
    from components.data.corpora import get_corpus
    from components.data.corpora.base import clip_table

    corpus = get_corpus(name)
    scan = corpus.scan(root)
    table, unreadable = clip_table(corpus, scan)
    rejected = scan.rejected + unreadable
    if table.empty:
        why = f"; e.g. {rejected[0][0]}: {rejected[0][1]}" if rejected else ""
        raise SerError(f"{root}: no readable {corpus.title or name} clips in it{why}")
    out = Path(features_dir) / name
    out.mkdir(parents=True, exist_ok=True)
    metrics = extract_features(table, out, settings, feature_sets)
    counts = {"n_clips": len(table), "n_rejected": len(rejected), "featurize": metrics}
    if rejected:
        counts["first_rejected"] = f"{rejected[0][0]}: {rejected[0][1]}"
    return table, counts


def evaluate_corpora(
    sources: dict[str, Path],
    features_dir: Path,
    settings: Settings,
    models: list[str],
    protocol: str,
    train: str | None = None,
    test: str | None = None,
    label_map_path: Path | None = None,
    label_set: str | None = None,
    normalization: str = "none",
    subset: str = "speech",
) -> dict[str, Any]:
    """Featurize each corpus and score each model under a protocol over the corpora.

    Args:
        sources: Corpus name → folder or zip (``components.data.corpora.CORPORA``).
        features_dir: Feature caches, one folder per corpus under it.
        settings: The typed settings (model sections, ``evaluate``, what featurize reads).
        models: Model section names (scalar feature sets only).
        protocol: ``cross-corpus`` (needs ``train`` and ``test``), ``leave-one-corpus-out``,
            ``leave-one-speaker-out``, ``actor-kfold`` or ``holdout``.
        train: cross-corpus: the training corpus.
        test: cross-corpus: the test corpus.
        label_map_path: The shared label map (default ``evaluate.label_map``).
        label_set: ``native`` (one corpus on its own labels: RAVDESS's 8, EmoDB's 7 ...) or
            ``shared`` (the label map's); default native for RAVDESS alone, else shared.
        normalization: ``none``, ``speaker`` or ``corpus`` (z-scores without labels).
        subset: RAVDESS's clips kept: ``speech``, ``song`` or ``all`` (the others are speech).

    Returns:
        ``label_set``, per corpus its counts and the clips left out by the label map,
        ``rows``: one results row per model (or per split when the splits' classes differ),
        and for ``cross-corpus`` and ``leave-one-corpus-out`` the ``matrix``'s cells
        (:func:`components.evaluation.cross_corpus.matrix_cells`).
    """
    from components.data.corpora.label_map import load_label_map
    from components.evaluation.cross_corpus import CORPUS_PROTOCOLS, combine, matrix_cells, result_rows, score
    from components.evaluation.dataset import load_dataset
    from components.evaluation.protocols import make_splits, select_subset

    specs = [ModelSpec.from_params(name, settings.models[name].as_dict()) for name in models]
    label_set = label_set or ("native" if set(sources) == {"ravdess"} else "shared")
    if label_set not in ("native", "shared"):
        raise SerError(f"label set {label_set!r}: choose native or shared")
    if label_set == "native" and len(sources) > 1:
        raise SerError(f"--label-set native scores one corpus on its own labels; {len(sources)} were given")
    label_map_path = label_map_path or settings.evaluate.label_map
    label_map = load_label_map(label_map_path) if label_set == "shared" else None
    options: dict[str, Any] = {}
    folds = settings.evaluate
    if protocol == "cross-corpus":
        if not train or not test:
            raise SerError("protocol cross-corpus needs --train CORPUS and --test CORPUS")
        options = {"train": train, "test": test}
    elif protocol == "actor-kfold":
        options = {"n_folds": folds.n_folds, "n_val_actors": folds.n_val_actors}
    elif protocol == "holdout":
        options = {"test_actors": folds.test_actors, "n_val_actors": folds.n_val_actors}
    sets = needed_sets(specs)
    report: dict[str, Any] = {"label_set": label_set, "normalization": normalization}
    report |= {"corpora": {}, "rows": []}
    tables, datasets = {}, {}
    for name, root in sources.items():
        tables[name], report["corpora"][name] = featurize_corpus(name, root, features_dir, settings, sets)
        data = load_dataset(Path(features_dir) / name, [s for s in sets if s != "logmel"], logmel=False)
        datasets[name] = data.subset(data.labels.index.isin(select_subset(data.labels, subset).index))
    open_sets = [name for name in sources if name.startswith("custom")]
    for spec in specs:
        picked = {name: _with_sets(data, spec.stats_sets) for name, data in datasets.items()}
        data, left_out = combine(picked, tables, label_map, normalization, open_sets)
        for name, counts in left_out.items():
            report["corpora"][name]["left_out_by_label"] = counts
        splits = make_splits(data.labels, protocol, **options)
        scored = score(spec, data, splits)
        extra = {"label_set": label_set, "normalization": normalization, "subset": subset}
        report["rows"] += result_rows(spec.name, protocol, scored, extra)
        if protocol in CORPUS_PROTOCOLS:
            report.setdefault("matrix", []).extend(matrix_cells(spec.name, scored))
    return report


def log_matrix_run(
    cells: list[dict[str, Any]],
    params: dict[str, Any],
    tracking: Tracking,
    project: Path,
    figure: Any = None,
    name: str = "cross-corpus",
) -> tuple[str, str]:
    """Log a cross-corpus matrix as one MLflow run (:func:`components.tracking.cross_corpus.log_matrix`).

    The store is ``MLFLOW_TRACKING_URI``, else ``tracking.tracking_uri`` (a relative SQLite
    path is relative to ``project``); the experiment ``<tracking.experiment>-cross-corpus``.

    Args:
        cells: The matrix's cells (``model``, ``train``, ``test``, ``uar``, ``accuracy`` ...).
        params: The run's params.
        tracking: The ``tracking`` settings.
        project: The folder of the params file.
        figure: The heat maps; None draws each model's UAR and accuracy
            (:func:`components.evaluation.cross_corpus.matrix_figure`).
        name: The run name.

    Returns:
        ``(run id, experiment name)``.
    """
    from mlflow import MlflowClient

    from components.evaluation.cross_corpus import matrix_figure
    from components.tracking.cross_corpus import EXPERIMENT_SUFFIX, log_matrix
    from components.tracking.runs import experiment_id, git_commit

    client = MlflowClient(open_store(tracking, project))
    experiment = tracking.experiment + EXPERIMENT_SUFFIX
    figure = figure if figure is not None else matrix_figure(cells)
    tags = {"git_commit": git_commit()}
    run = log_matrix(client, experiment_id(client, tracking, experiment), cells, params, figure, name, tags)
    return run, experiment


def open_store(tracking: Tracking, project: Path) -> str:
    """The tracking URI, checked (a server must answer within ``tracking.http_*``); a SQLite
    store's folder is made, so the first run creates the store."""
    from components.tracking.runs import store_uri
    from components.tracking.store import check_server

    uri = store_uri(tracking, project)
    check_server(tracking, uri)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return uri


def _with_sets(data: Any, names: tuple[str, ...]) -> Any:
    """The dataset with only the scalar sets a model reads."""
    from components.evaluation.dataset import Dataset

    return Dataset(data.labels, {name: data.stats[name] for name in names})


# The ``evaluate`` deployment: a registered model version, as it is, on a data source.

EVALUATE_PROTOCOLS = ("holdout", "all")  # a fitted model is scored, not refitted: no folds


def pick_clips(files: list[AudioFile], protocol: str, subset: str, test_actors: list[int]) -> list[AudioFile]:
    """The clips a fitted model is scored on: a subset, and for ``holdout`` only the test actors."""
    if protocol not in EVALUATE_PROTOCOLS:
        raise SerError(
            f"protocol {protocol!r}: a registered model is scored on holdout actors or all clips "
            f"({', '.join(EVALUATE_PROTOCOLS)}); cross-validating a configuration is `ser evaluate`"
        )
    if subset not in SUBSETS:
        raise SerError(f"unknown subset {subset!r}: choose one of {', '.join(SUBSETS)}")
    picked = [f for f in files if subset == "all" or f.labels.channel_name == subset]
    if protocol == "holdout":
        picked = [f for f in picked if f.labels.actor in set(test_actors)]
    return picked


@flow(name="evaluate")
@fail_cleanly
def evaluate_version(
    source: str,
    model: str | None = None,
    protocol: Literal["holdout", "all"] = "holdout",
    subset: Literal["all", "speech", "song"] = "all",
    test_actors: list[int] | None = None,
    project_dir: str | None = None,
) -> dict[str, Any]:
    """Score a registered model version on a data source and log the result to MLflow.

    Args:
        source: ``demo``, ``zenodo``, or a folder or .zip of RAVDESS audio (as ``ingest.source``).
        model: MLflow model URI, e.g. ``models:/ravdess-emotion/3``; default the champion of
            ``tracking.model_name`` (``models:/ravdess-emotion@champion``).
        protocol: ``holdout``: the clips of ``test_actors``; ``all``: every clip (speakers the
            model never heard, e.g. new recordings).
        subset: ``speech``, ``song`` or ``all``.
        test_actors: Holdout speakers (default ``evaluate.test_actors``).
        project_dir: The checkout whose params.yaml names the store (default: SER_PROJECT_DIR or cwd).

    Returns:
        Accuracy, UAR, macro and weighted F1, the number of clips, and the MLflow run id.
    """
    from mlflow import MlflowClient
    from prefect.artifacts import create_markdown_artifact

    from components.registry.model_io import load_model, use_store
    from components.serving.predict import predict_files, summarize, write_results_csv
    from components.tracking.runs import experiment_id, scalar_metrics, start_run, store_uri
    from flows.ingest import stage_source

    logger = get_run_logger()
    project = project_root(project_dir)
    settings = load_settings(project / "params.yaml")
    tracking = settings.tracking
    model = model or settings.tracking.champion_uri
    actors = list(test_actors or settings.evaluate.test_actors)
    with tempfile.TemporaryDirectory(prefix="ser-evaluate-") as staging:
        folder = stage_source(source, Path(staging), settings.ingest)
        found = discover(folder)
        clips = pick_clips(found.files, protocol, subset, actors)
        if not clips:
            where = f"actors {actors}" if protocol == "holdout" else "any actor"
            raise SerError(f"{source}: no {subset} clips of {where} to evaluate on")
        use_store(tracking, project)
        loaded = load_model(model)
        checks = loaded.clip_checks  # the checks the model was trained with, not today's params.yaml
        locations = [c.location for c in clips]
        score, clip_dur = loaded.predict_signals, loaded.clip_dur
        results = predict_files(locations, score, clip_dur, progress=False, checks=checks)
    summary = summarize(results)
    if summary is None:
        raise SerError(f"{source}: none of the {len(clips)} clips could be scored (see the log)")
    about = loaded.description
    client = MlflowClient(store_uri(tracking, project))
    experiment = experiment_id(client, tracking)
    version = about.get("version", "")
    tags = {"model_uri": model, "model_version": version, "source": source, "protocol": protocol}
    run = start_run(client, experiment, f"evaluate/{about.get('name', 'model')}-v{version}", tags=tags)
    for key, value in {
        "subset": subset,
        "test_actors": ",".join(map(str, actors)),
        "n_clips": len(clips),
    }.items():
        client.log_param(run, key, value)
    for key, value in scalar_metrics(summary).items():
        client.log_metric(run, key, value)
    client.log_dict(
        run,
        {"confusion": summary["confusion"], "class_names": summary["class_names"]},
        "confusion_matrix.json",
    )
    client.log_figure(
        run, plot_confusion(summary["confusion"], summary["class_names"], model), "confusion_matrix.png"
    )
    with tempfile.TemporaryDirectory() as tmp:
        write_results_csv(Path(tmp) / "predictions.csv", results)
        client.log_artifact(run, str(Path(tmp) / "predictions.csv"))
    client.set_terminated(run)
    failed = [r.error for r in results if r.error]
    for error in failed:
        logger.warning("%s", error)
    scores = {key: round(float(summary[key]), 4) for key in ("accuracy", "uar", "macro_f1", "weighted_f1")}
    kind = about.get("tags", {}).get("model_name", "?")
    speakers = "actors " + ",".join(map(str, actors)) if protocol == "holdout" else "every actor"
    text = "\n".join(
        [
            "# Evaluation of a registered model",
            "",
            f"- **Model**: {model} (version {version or '?'}, {kind})",
            f"- **Data**: {source}, {protocol} ({speakers}), {subset}",
            f"- **Clips**: {summary['n']} scored, {len(failed)} failed",
            "- **Scores**: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()),
            f"- **MLflow run**: `{run}`",
        ]
    )
    create_markdown_artifact(
        markdown=text + "\n", key="evaluate", description="Evaluation of a registered model"
    )
    return {
        **scores,
        "n_clips": summary["n"],
        "n_failed": len(failed),
        "run_id": run,
        "model_version": version,
    }
