"""Stage ``wav2vec2``: a pretrained speech encoder for emotion, scored like the baselines, safe offline.

``wav2vec2.mode`` picks the route (``both`` runs the two):

- ``embed``, the CPU path: the frozen encoder's time-pooled hidden states of every layer are
  cached in ``data/embeddings/wav2vec2.parquet``, one row per clip keyed by clip id and content
  hash (and the model's digest and pooling), so only new or changed clips pass through the
  encoder. A light head on them is scored under every ``evaluate.runs`` protocol and subset.
- ``finetune``: the model is fine-tuned on each split's training actors, the best epoch chosen
  on its validation actors, with resumable checkpoints under
  ``data/checkpoints/wav2vec2/<protocol>-<subset>-<fold>/`` (outside DVC's outputs, so an
  interrupted run goes on where it stopped). With ``device: auto`` and no GPU it is skipped:
  a base-sized model would take days on a CPU (``device: cpu`` forces it).

Missing weights never break ``dvc repro``: when the pretrained model is neither a local folder
nor cached and cannot be downloaded, the stage records ``skipped: ...`` in
``metrics/wav2vec2.json`` and in an MLflow run tagged ``status=skipped``, prints that line and
exits 0; with ``wav2vec2.required: true`` it fails with the same one line instead. The best
model is refit on the primary subset, logged as a raw-audio pyfunc carrying its Hugging Face
folder, and competes for ``champion`` like the baselines.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import joblib
import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.entities import Metric
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from components.data.parquet import write_table
from components.data.ravdess import EMOTIONS
from components.errors import SerError
from components.evaluation.evaluate import (
    Evaluation,
    FoldResult,
    ModelSpec,
    fold_predictions,
    protocol_settings,
    results_table,
)
from components.evaluation.metrics import compute_metrics, format_table, plot_confusion, summarize_folds
from components.evaluation.protocols import Split, actor_kfold, make_splits, select_subset
from components.evaluation.train_corpora import chosen_labels, load_choice
from components.features.store import KEY_COLUMNS, LABEL_TYPES, read_info, read_waveforms
from components.paths import CLIPS_TABLE, FEATURES_DIR, METRICS_DIR
from components.registry.model_card import CardFacts
from components.registry.model_io import CODE_DIR, REQUIREMENTS, input_example, signature
from components.registry.promote import Decision
from components.registry.publish import publish
from components.runtime.files import exit_on_error, write_json, write_text
from components.serving.pyfunc import MODEL_CONFIG
from components.settings import Evaluate, Run, Settings, Wav2Vec2, apply_profile, load_settings
from components.tracking.runs import (
    clips_version,
    data_version,
    end_run,
    experiment_id,
    git_commit,
    log_evaluation,
    pooled_report,
    scalar_metrics,
    start_run,
    tracking_uri,
)
from components.tracking.store import check_server
from components.wav2vec2.checkpoint import LAST
from components.wav2vec2.ct2_whisper import resolve_encoder
from components.wav2vec2.embed import (
    ATTRS_KEY,
    HEADS,
    POOLINGS,
    embeddings_to_frame,
    extract_embeddings,
    fit_embedding_head,
    frame_to_embeddings,
    load_encoder,
)
from components.wav2vec2.finetune import (
    FinetuneResult,
    FinetuneSettings,
    finetune,
    predict_proba,
    settings_from,
)
from components.wav2vec2.model import SAMPLING_RATE, build_classifier
from components.wav2vec2.predict import resolve_device
from components.wav2vec2.pretrained import PretrainedUnavailable
from components.wav2vec2.serving import Wav2Vec2Predictor, Wav2Vec2Pyfunc
from flows import fail_cleanly, run_flow

EMBEDDINGS_TABLE = Path("data/embeddings/wav2vec2.parquet")  # DVC output with persist: reused rows survive
CHECKPOINTS_DIR = Path("data/checkpoints/wav2vec2")  # never a DVC output: DVC would delete it before a run
METRICS_FILE = METRICS_DIR / "wav2vec2.json"
MODES: dict[str, tuple[str, ...]] = {
    "embed": ("embed",),
    "finetune": ("finetune",),
    "both": ("embed", "finetune"),
}
# Bump when the embeddings table changes meaning: every row is recomputed.
# 2: each checkpoint's own input normalisation (its feature extractor's do_normalize).
CACHE_FORMAT = 2
EMBED_CHUNK = 64  # clips read and embedded at a time (progress in the log, flat memory)
SAVE_EVERY_S = 120.0  # while embedding, save the rows done so far this often
NO_GPU = (
    "skipped: no GPU: fine-tuning wav2vec2 on a CPU takes days; run the wav2vec2-finetune deployment "
    "on the gpu work pool (prefect.yaml), or set wav2vec2.device: cpu to force it"
)


def stage_settings(
    section: Wav2Vec2, mode: str | None = None, device: str | None = None, max_epochs: int | None = None
) -> dict:
    """The ``wav2vec2`` settings with flow-parameter overrides and fine-tuning settings, as one dict.

    ``max_epochs`` caps the fine-tuning epochs (``train.quick.max_epochs`` under the quick profile).

    Raises:
        SerError: An unknown mode, pooling, head, preset or fine-tuning setting.
    """
    config = section.model_dump()
    config |= {"mode": mode or section.mode, "device": device or section.device}
    if config["mode"] not in MODES:
        raise SerError(f"wav2vec2 mode is {config['mode']!r}: choose one of {', '.join(MODES)}")
    for name, allowed in (("pooling", POOLINGS), ("head", HEADS)):
        if config[name] not in allowed:
            raise SerError(f"wav2vec2 {name} is {config[name]!r}: choose one of {', '.join(allowed)}")
    overrides = {key: config[key] for key in ("epochs", "batch_size") if config[key] is not None}
    overrides |= {**(config["overrides"] or {}), "device": config["device"]}
    config["finetune"] = settings_from(config["preset"], overrides)
    if max_epochs is not None and config["finetune"].epochs > max_epochs:
        config["finetune"] = replace(config["finetune"], epochs=max_epochs)
    return config


def model_digest(folder: str | Path) -> str:
    """A hash of a model folder's configs and weights: another model never reuses old results."""
    digest = hashlib.blake2b(digest_size=8)
    for path in sorted(Path(folder).iterdir()):
        if path.is_file() and path.suffix in (".json", ".safetensors", ".bin"):
            digest.update(path.name.encode())
            with path.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()


def read_labels(table: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Keys and labels of the waveform table, and its metadata (16 kHz is required).

    Raises:
        SerError: The table is missing, empty, or at another sampling rate.
    """
    if not table.exists():
        raise SerError(f"{table}: missing; add waveform to featurize.feature_sets and run featurize")
    info = read_info(table) or {}
    if info.get("sampling_rate") != SAMPLING_RATE:
        raise SerError(
            f"{table}: waveforms at {info.get('sampling_rate')} Hz; wav2vec2 needs "
            f"preprocess.sampling_rate {SAMPLING_RATE}"
        )
    labels = pd.read_parquet(table, columns=[*KEY_COLUMNS, *LABEL_TYPES])
    if labels.empty:
        raise SerError(f"{table}: no clips; run the featurize stage on a corpus first")
    return labels, info


def read_cache(path: Path, key: dict[str, Any]) -> dict[tuple[str, str], np.ndarray]:
    """Rows of an old embeddings table made under the same ``key``, by ``(clip_id, content_hash)``."""
    try:
        frame = pd.read_parquet(path)
        ids, values = frame_to_embeddings(frame)
    except (OSError, ValueError, KeyError, SerError):  # absent or unreadable: recompute everything
        return {}
    meta = frame.attrs.get(ATTRS_KEY, {})
    if {name: meta.get(name) for name in key} != key:
        return {}
    return dict(zip(zip(ids, frame["content_hash"], strict=True), values, strict=True))


def write_cache(path: Path, rows: list[tuple[str, str]], values: list[np.ndarray], key: dict) -> None:
    """Write the embeddings table (``clip_id``, ``content_hash``, ``embedding``) atomically."""
    frame = embeddings_to_frame([clip_id for clip_id, _ in rows], np.stack(values), info=key)
    frame.insert(1, "content_hash", [content_hash for _, content_hash in rows])
    write_table(frame, path)


@task(cache_policy=NONE)
def embed_clips(
    table: Path, labels: pd.DataFrame, folder: str, key: dict[str, Any], batch_size: int, device: str
) -> tuple[np.ndarray, dict[str, Any]]:
    """Embeddings of every clip: cached rows are reused, the rest computed and saved as they come."""
    logger = get_run_logger()
    started = saved = time.perf_counter()
    known = read_cache(EMBEDDINGS_TABLE, key)
    keys = list(zip(labels["clip_id"], labels["content_hash"], strict=True))
    todo = [clip_key for clip_key in keys if clip_key not in known]

    def save() -> None:  # the rows known so far: an interrupted run loses little
        done = [clip_key for clip_key in keys if clip_key in known]
        write_cache(EMBEDDINGS_TABLE, done, [known[clip_key] for clip_key in done], key)

    if todo:
        encoder = load_encoder(folder)
        for start in range(0, len(todo), EMBED_CHUNK):
            chunk = dict(todo[start : start + EMBED_CHUNK])
            rows, waves = read_waveforms(table, list(chunk))
            values = extract_embeddings(encoder, waves, batch_size, key["pooling"], device)
            known.update(((c, chunk[c]), v) for c, v in zip(rows["clip_id"], values, strict=True))
            logger.info(
                "wav2vec2: embedded %d of %d new clips", min(start + EMBED_CHUNK, len(todo)), len(todo)
            )
            if time.perf_counter() - saved > SAVE_EVERY_S:
                save()
                saved = time.perf_counter()
    seconds = time.perf_counter() - started
    save()
    counts = {"n_rows": len(keys), "n_reused": len(keys) - len(todo), "n_extracted": len(todo)}
    counts |= {"seconds": round(seconds, 2), "clips_per_s": round(len(todo) / seconds, 2) if todo else None}
    return np.stack([known[clip_key] for clip_key in keys]), counts


FitPredict = Callable[[Split, pd.DataFrame, np.ndarray], tuple[np.ndarray, float, float, int]]


def score_splits(
    model: str, labels: pd.DataFrame, run: Run, evaluate: Evaluate, fit_predict: FitPredict
) -> Evaluation:
    """Fit and score on every split of one protocol × subset; ``fit_predict`` never sees test labels.

    ``fit_predict(split, subset_labels, positions)`` returns the test clips' predicted emotion
    codes, training and prediction seconds and the number of training clips; ``positions`` maps
    the subset's rows to the rows of ``labels``.
    """
    started = time.perf_counter()
    protocol, subset = run.protocol, run.subset
    chosen = select_subset(labels, subset)
    positions, rows = chosen.index.to_numpy(), chosen.reset_index(drop=True)
    splits = make_splits(rows, protocol, **protocol_settings(protocol, evaluate))
    y = rows["emotion"].to_numpy()
    classes = sorted(set(y.tolist()))
    result = Evaluation(model, protocol, subset)
    for split in splits:
        predicted, train_seconds, predict_seconds, n_train = fit_predict(split, rows, positions)
        metrics = compute_metrics(y[split.test], predicted, classes=classes)
        fold = FoldResult(
            split.name, split.test_actors, metrics, train_seconds, predict_seconds, n_train, len(split.test)
        )
        fold.predictions = fold_predictions(rows, split.test, y[split.test], predicted)  # model card groups
        result.folds.append(fold)
    result.summary = summarize_folds([fold.metrics for fold in result.folds])
    result.summary["train_seconds"] = float(sum(f.train_seconds for f in result.folds))
    result.seconds = time.perf_counter() - started
    return result


def head_fit_predict(embeddings: np.ndarray, kind: str, layer: str | int) -> FitPredict:
    """Fit the head on the training and validation actors (it has no early stopping), predict the test."""

    def fit_predict(split: Split, rows: pd.DataFrame, positions: np.ndarray):
        train = np.union1d(split.train, split.val)
        y = rows["emotion"].to_numpy()
        t0 = time.perf_counter()
        head = fit_embedding_head(embeddings[positions[train]], y[train], kind, layer)
        t1 = time.perf_counter()
        predicted = head.predict(embeddings[positions[split.test]])
        return predicted, t1 - t0, time.perf_counter() - t1, len(train)

    return fit_predict


def prepare_checkpoints(folder: Path, key: str) -> None:
    """Start a fold's checkpoints afresh when its settings, model or clips changed since they were made."""
    marker = folder / "key.txt"
    if marker.exists() and marker.read_text() != key:
        get_run_logger().warning("wav2vec2: %s holds another run's checkpoints; starting afresh", folder)
        shutil.rmtree(folder)
    write_text(marker, key)  # atomic: a run killed mid-write must not leave a half key that wipes them


def resume_point(folder: Path) -> tuple[int, int] | None:
    """Epochs and batches of the next epoch a fold's ``last.pt`` holds; None: nothing to resume.

    Only the progress counters are read (the weights stay memory-mapped, untouched); an
    unreadable file is None here and ``finetune`` says what is wrong with it.
    """
    path = folder / LAST
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        epoch, batch = int(state["epoch"]), int(state.get("batch_in_epoch", 0))
    except Exception:  # truncated or foreign: finetune's own check raises the message
        return None
    return (epoch, batch) if epoch or batch else None


@task(cache_policy=NONE)
def finetune_split(
    folder: str,
    settings: FinetuneSettings,
    train: tuple[list[np.ndarray], np.ndarray],
    val: tuple[list[np.ndarray], np.ndarray],
    checkpoint_dir: Path,
    key: str,
    log: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[Any, FinetuneResult]:
    """Fine-tune a fresh classifier on one split (labels: emotion code - 1), resuming its checkpoints."""
    if len(val[0]) == 0:
        raise SerError(
            "wav2vec2 fine-tuning picks its best epoch on validation actors: "
            "set evaluate.n_val_actors to 1 or more"
        )
    prepare_checkpoints(checkpoint_dir, key)
    resumed = resume_point(checkpoint_dir)
    if resumed is not None:
        epoch, batch = resumed
        within = f", batch {batch}" if batch else ""
        get_run_logger().info(
            "resuming %s from epoch %d%s (checkpoint %s)",
            checkpoint_dir.name,
            epoch,
            within,
            checkpoint_dir / LAST,
        )
    torch.manual_seed(settings.seed)
    model = build_classifier(folder, len(EMOTIONS), **settings.model_options())
    return model, finetune(model, train, val, settings, checkpoint_dir, resume=True, log=log)


@dataclass
class Context:
    """What every part of one stage run shares."""

    evaluate: Evaluate
    registry_name: str  # tracking.model_name
    config: dict[str, Any]
    folder: str
    digest: str
    trim_top_db: float | None
    version: str
    client: MlflowClient
    experiment: str
    parent: str


@dataclass
class Candidate:
    """A mode's result on the primary protocol × subset, and how to refit it for the registry."""

    kind: str  # embed | finetune
    evaluation: Evaluation
    refit: Callable[[], tuple[Wav2Vec2Predictor, Any, int]]  # predictor, torch model, training clips


def primary(results: list[Evaluation], runs: list[Run]) -> Evaluation:
    """The evaluation of the first (primary) protocol × subset."""
    return next(r for r in results if (r.protocol, r.subset) == (runs[0].protocol, runs[0].subset))


def run_embed(ctx: Context, labels: pd.DataFrame, table: Path) -> tuple[list[Evaluation], Candidate, dict]:
    """Cache the embeddings, score the head under every run, log them; the refit uses all subset clips."""
    config, evaluate = ctx.config, ctx.evaluate
    key = {"format": CACHE_FORMAT, "pretrained": config["pretrained"], "model": ctx.digest}
    key["pooling"] = config["pooling"]
    batch_size, device = config["finetune"].eval_batch_size, str(resolve_device(config["device"]))
    embeddings, counts = embed_clips(table, labels, ctx.folder, key, batch_size, device)
    head, layer = config["head"], config["layer"]
    params = {"pretrained": config["pretrained"], "pooling": config["pooling"], "head": head, "layer": layer}
    spec = ModelSpec("wav2vec2-embed", "wav2vec2-embed", params, ())
    fit_predict = head_fit_predict(embeddings, head, layer)
    results = [score_splits(spec.name, labels, run, evaluate, fit_predict) for run in evaluate.runs]
    for result in results:
        log_evaluation(ctx.client, ctx.experiment, ctx.parent, spec, result, {"data_version": ctx.version})

    def refit() -> tuple[Wav2Vec2Predictor, Any, int]:
        chosen = select_subset(labels, evaluate.runs[0].subset)
        fitted = fit_embedding_head(
            embeddings[chosen.index.to_numpy()], chosen["emotion"].to_numpy(), head, layer
        )
        predictor = Wav2Vec2Predictor(
            "embed", ctx.trim_top_db, head=fitted, pooling=config["pooling"], batch_size=batch_size
        )
        return predictor, load_encoder(ctx.folder), len(chosen)

    return results, Candidate("embed", primary(results, evaluate.runs), refit), counts


def run_finetune(ctx: Context, table: Path) -> tuple[list[Evaluation], Candidate, dict]:
    """Fine-tune and score every split of every run, logging epochs live; refit for the registry."""
    settings, evaluate = ctx.config["finetune"], ctx.evaluate
    labels, waves = read_waveforms(table)
    folds: list[dict[str, Any]] = []

    def train(name: str, rows: pd.DataFrame, positions: np.ndarray, parts: dict[str, np.ndarray], log=None):
        ids = {part: rows["clip_id"].iloc[idx].tolist() for part, idx in parts.items()}
        payload = {"settings": settings.fingerprint(), "model": ctx.digest, **ids}
        key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        y = rows["emotion"].to_numpy() - 1
        data = {part: ([waves[i] for i in positions[idx]], y[idx]) for part, idx in parts.items()}
        return finetune_split(
            ctx.folder, settings, data["train"], data["val"], CHECKPOINTS_DIR / name, key, log
        )

    def evaluate_run(run: dict) -> Evaluation:
        name = f"wav2vec2-finetune/{run.protocol}/{run.subset}"
        tags = {"model": "wav2vec2-finetune", "protocol": run.protocol}
        run_id, fold_runs = start_run(ctx.client, ctx.experiment, name, ctx.parent, tags), []

        def fit_predict(split: Split, rows: pd.DataFrame, positions: np.ndarray):
            fold_run = start_run(
                ctx.client, ctx.experiment, f"{name}/{split.name}", run_id, {"fold": split.name}
            )
            fold_runs.append(fold_run)
            folder = f"{run.protocol}-{run.subset}-{split.name}"
            parts = {"train": split.train, "val": split.val}
            model, result = train(folder, rows, positions, parts, epoch_logger(ctx.client, fold_run))
            started = time.perf_counter()
            test_waves = [waves[i] for i in positions[split.test]]
            batch, max_dur, precision = settings.eval_batch_size, settings.max_dur, settings.precision
            proba = predict_proba(
                model, test_waves, batch, settings.device, max_dur=max_dur, precision=precision
            )
            seconds = time.perf_counter() - started
            seen = np.unique(rows["emotion"].to_numpy()[split.train])  # only emotions it was trained on
            log_fold(ctx.client, fold_run, split, result)
            folds.append({"fold": folder, **fold_record(result)})
            return seen[proba[:, seen - 1].argmax(axis=1)], result.train_seconds, seconds, len(split.train)

        evaluation = score_splits("wav2vec2-finetune", labels, run, evaluate, fit_predict)
        for fold, fold_run in zip(evaluation.folds, fold_runs, strict=True):
            for key in ("accuracy", "uar", "macro_f1", "weighted_f1"):
                ctx.client.log_metric(fold_run, key, fold.metrics[key])
            ctx.client.set_terminated(fold_run)
        spec = ModelSpec("wav2vec2-finetune", "wav2vec2-finetune", settings.fingerprint(), ())
        log_summary(ctx.client, run_id, spec, evaluation, {"pretrained": ctx.config["pretrained"]})
        return evaluation

    results = [evaluate_run(run) for run in evaluate.runs]

    def refit() -> tuple[Wav2Vec2Predictor, Any, int]:
        subset = evaluate.runs[0].subset
        chosen = select_subset(labels, subset)
        rows = chosen.reset_index(drop=True)
        val = actor_kfold(rows, n_folds=evaluate.n_folds, n_val_actors=evaluate.n_val_actors)[0].val
        parts = {"train": np.setdiff1d(np.arange(len(rows)), val), "val": val}
        model, result = train(f"refit-{subset}", rows, chosen.index.to_numpy(), parts)
        folds.append({"fold": f"refit-{subset}", **fold_record(result)})
        predictor = Wav2Vec2Predictor(
            "finetune", ctx.trim_top_db, max_dur=settings.max_dur, batch_size=settings.eval_batch_size
        )
        return predictor, model, len(parts["train"])

    return results, Candidate("finetune", primary(results, evaluate.runs), refit), {"folds": folds}


def fold_record(result: FinetuneResult) -> dict[str, Any]:
    """What a fine-tuning run did, for the metrics file."""
    record = {"best_epoch": result.best_epoch, "epochs_run": result.epochs_run}
    record |= {"resumed_from": result.resumed_from, "stopped_early": result.stopped_early}
    record |= {"train_seconds": round(result.train_seconds, 2), "device": result.device}
    return record | {"samples_per_second": round(result.samples_per_second, 2), "precision": result.precision}


def epoch_logger(client: MlflowClient, run_id: str) -> Callable[[int, dict[str, float]], None]:
    """Log one epoch's metrics to ``run_id`` as the epoch ends (step = epoch)."""

    def log(epoch: int, values: dict[str, float]) -> None:
        stamp = int(time.time() * 1000)
        client.log_batch(run_id, [Metric(k, float(v), stamp, epoch) for k, v in values.items()])

    return log


def log_fold(client: MlflowClient, run_id: str, split: Split, result: FinetuneResult) -> None:
    """A fold's epochs trained by an earlier, interrupted run (resumed here) and its training summary."""
    stamp = int(time.time() * 1000)
    earlier = [
        Metric(k, float(v), stamp, epoch)
        for k, values in result.history.items()
        for epoch, v in enumerate(values[: result.resumed_from], start=1)
    ]
    if earlier:
        client.log_batch(run_id, earlier)
    client.log_param(run_id, "test_actors", ",".join(map(str, split.test_actors)) or "random")
    client.log_param(run_id, "val_actors", ",".join(map(str, split.val_actors)) or "random")
    for key in ("best_epoch", "epochs_run", "resumed_from", "train_seconds", "samples_per_second"):
        client.log_metric(run_id, key, float(getattr(result, key)))


def log_summary(client: MlflowClient, run: str, spec: ModelSpec, result: Evaluation, extra: dict) -> None:
    """What ``components.tracking.runs.log_evaluation`` logs on its model run, on a run made beforehand."""
    params = {"kind": spec.kind, **{f"model.{k}": v for k, v in spec.params.items()}, **extra}
    for key, value in (params | {"protocol": result.protocol, "subset": result.subset}).items():
        client.log_param(run, key, str(value)[:500])
    for key, value in scalar_metrics(result.summary).items():
        client.log_metric(run, key, value)
    pooled = {"confusion": result.summary["confusion"], "class_names": result.summary["class_names"]}
    client.log_dict(run, pooled, "confusion_matrix.json")
    title = f"{spec.name}/{result.protocol}/{result.subset}"
    figure = plot_confusion(pooled["confusion"], pooled["class_names"], title)
    client.log_figure(run, figure, "confusion_matrix.png")
    client.log_dict(run, {f.name: f.metrics for f in result.folds}, "fold_metrics.json")
    client.log_text(run, pooled_report(result), "classification_report.md")
    client.set_terminated(run)


def publish_candidate(ctx: Context, candidate: Candidate, fresh: dict[str, float]) -> Decision:
    """Refit the candidate and :func:`publish` it as a raw-audio pyfunc carrying its model folder."""
    metric, result = ctx.evaluate.primary_metric, candidate.evaluation
    score = float(result.summary[f"{metric}_mean"])
    predictor, model, n_train = candidate.refit()
    kind = f"wav2vec2-{candidate.kind}"
    predictor.info = {"model": kind, "pretrained": ctx.config["pretrained"], metric: score}
    predictor.info |= {"n_train_clips": n_train, "data_version": ctx.version}
    tags = {"model_kind": kind, "model_name": kind, "data_version": ctx.version}
    tags["pretrained"] = ctx.config["pretrained"]

    def log_model() -> str:
        requirements = [*REQUIREMENTS, "transformers", "safetensors"]
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(Path(tmp) / "model")
            joblib.dump(predictor, Path(tmp) / "predictor.joblib")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=Wav2Vec2Pyfunc(),
                artifacts={
                    "predictor": str(Path(tmp) / "predictor.joblib"),
                    "model_dir": str(Path(tmp) / "model"),
                },
                code_paths=[str(CODE_DIR)],
                signature=signature(),
                input_example=input_example(),
                pip_requirements=[f"{name}=={metadata.version(name)}" for name in requirements],
                model_config={**MODEL_CONFIG, "device": "auto"},  # a server may override these keys
            )
        return info.model_uri

    preprocessing = {"sampling_rate": SAMPLING_RATE, "trim_top_db": ctx.trim_top_db}
    preprocessing |= {key: ctx.config[key] for key in ("pretrained", "pooling", "layer", "head")}
    facts = CardFacts(preprocessing)  # its card: intended use, licence, metrics, groups, decision
    client, name, experiment, parent = ctx.client, ctx.registry_name, ctx.experiment, ctx.parent
    return publish(client, name, experiment, parent, result, metric, tags, log_model, fresh, facts)


def stage_data_version(labels: pd.DataFrame) -> str:
    """The baselines' data version (dvc.lock or the clips table), else one from the waveform table."""
    try:
        return data_version()
    except OSError:  # a features folder used on its own, with no dvc.lock and no clips table
        return clips_version(labels)


def record_skip(client: MlflowClient, experiment: str, config: dict[str, Any], status: str) -> dict[str, Any]:
    """Make a skip visible: an MLflow run tagged ``status=skipped`` and the metrics file."""
    tags = {"status": "skipped", "status_message": status, "pretrained": config["pretrained"]}
    run = start_run(client, experiment, "wav2vec2", tags=tags | {"mode": config["mode"]})
    for key, value in (("status", status), ("pretrained", config["pretrained"]), ("mode", config["mode"])):
        client.log_param(run, key, value[:500])
    client.set_terminated(run)
    get_run_logger().warning("wav2vec2: %s", status)
    metrics = {
        "status": status,
        "pretrained": config["pretrained"],
        "mode": config["mode"],
        "mlflow_run": run,
    }
    write_json(METRICS_FILE, metrics)
    return metrics


@flow(name="wav2vec2")
@fail_cleanly
def wav2vec2_stage(
    settings: Settings | None = None,
    mode: Literal["embed", "finetune", "both"] | None = None,
    device: Literal["auto", "cuda", "cpu"] | None = None,
    features_dir: Path = FEATURES_DIR,
) -> dict[str, Any]:
    """Score wav2vec2 (embeddings + head, fine-tuning, or both), log to MLflow, publish the best.

    Args:
        settings: The pipeline's settings; None reads ``params.yaml`` from the working folder.
        mode: Overrides ``wav2vec2.mode`` (``embed``, ``finetune``, ``both``).
        device: Overrides ``wav2vec2.device`` (``auto``, ``cuda``, ``cpu``).
        features_dir: The featurize stage's tables (``waveform.parquet`` is read).
    """
    started = time.perf_counter()
    logger = get_run_logger()
    # train.profile quick trims this stage as it trims train: the first runs and folds, capped epochs
    settings = apply_profile(settings or load_settings())
    quick = settings.train.quick if settings.train.profile == "quick" else None
    config = stage_settings(settings.wav2vec2, mode, device, quick.max_epochs if quick else None)
    tracking = settings.tracking
    EMBEDDINGS_TABLE.parent.mkdir(parents=True, exist_ok=True)  # a DVC output: it must exist, even skipped
    modes = {name: "ok" for name in MODES[config["mode"]]}
    if "finetune" in modes and config["device"] == "auto" and not torch.cuda.is_available():
        modes["finetune"] = NO_GPU
    try:
        folder, skipped = resolve_encoder(config["pretrained"], local_only=config["local_only"]), None
    except PretrainedUnavailable as err:
        if config["required"]:
            raise
        folder, skipped = "", f"skipped: {err}"
    check_server(tracking, tracking_uri(tracking))  # a server that does not answer fails in seconds
    client = MlflowClient(tracking_uri(tracking))
    experiment = experiment_id(client, tracking)
    if skipped or "ok" not in modes.values():
        return record_skip(client, experiment, config, skipped or NO_GPU)
    device = str(resolve_device(config["device"]))  # device cuda without a GPU fails here, in one line

    table = Path(features_dir) / "waveform.parquet"
    labels, info = read_labels(table)
    choice = load_choice(CLIPS_TABLE, settings.train.corpora, Path(settings.evaluate.label_map))
    if choice is not None:  # train.corpora: the same clips, speakers and labels as the train stage
        labels = chosen_labels(labels, choice)
        logger.info("wav2vec2: %s", choice.describe())
    version = stage_data_version(labels)
    tags = {"status": "ok", "data_version": version, "git_commit": git_commit()}
    tags |= {"pretrained": config["pretrained"], **{f"{name}_status": value for name, value in modes.items()}}
    parent = start_run(client, experiment, "wav2vec2", tags=tags)
    for key in ("pretrained", "mode", "device", "preset"):
        client.log_param(parent, key, str(config[key]))
    trim_top_db = info.get("params", {}).get("trim_top_db")
    digest = model_digest(folder)
    ctx = Context(
        settings.evaluate,
        tracking.model_name,
        config,
        folder,
        digest,
        trim_top_db,
        version,
        client,
        experiment,
        parent,
    )
    try:
        out = run_modes(ctx, modes, labels, table)
    except BaseException as err:
        end_run(client, parent, err)  # FAILED (KILLED on Ctrl-C) with the reason as a tag
        raise
    client.set_terminated(parent)
    logger.info("wav2vec2: best %s; %s", out["best"], out["registry"]["reason"])
    out = {
        "status": "ok",
        "pretrained": config["pretrained"],
        "mode": config["mode"],
        "device": device,
        **out,
    }
    out["seconds"]["total"] = round(time.perf_counter() - started, 1)
    write_json(METRICS_FILE, out)
    return out


def run_modes(ctx: Context, modes: dict[str, str], labels: pd.DataFrame, table: Path) -> dict[str, Any]:
    """Run the modes that are on, publish the best of them, and summarise for the metrics file."""
    metric = ctx.evaluate.primary_metric
    results, candidates, out = [], [], {"modes": modes, "seconds": {}}
    for name in ("embed", "finetune"):
        if modes.get(name) == "ok":
            started = time.perf_counter()
            done = run_embed(ctx, labels, table) if name == "embed" else run_finetune(ctx, table)
            results += done[0]
            candidates.append(done[1])
            out["embeddings" if name == "embed" else "finetune"] = done[2]
            out["seconds"][name] = round(time.perf_counter() - started, 1)
    scores = {f"wav2vec2-{c.kind}": c.evaluation.summary[f"{metric}_mean"] for c in candidates}
    best = max(candidates, key=lambda c: scores[f"wav2vec2-{c.kind}"])
    out["registry"] = vars(publish_candidate(ctx, best, scores))
    out["results"] = results_table(results, metric)
    ctx.client.log_text(ctx.parent, format_table(out["results"], list(out["results"][0])), "results.md")
    evaluation = best.evaluation
    out["best"] = {"model": f"wav2vec2-{best.kind}", "protocol": evaluation.protocol}
    out["best"] |= {"subset": evaluation.subset, metric: scores[f"wav2vec2-{best.kind}"]}
    trained = [
        f["samples_per_second"]
        for f in out.get("finetune", {}).get("folds", [])
        if f["epochs_run"] > f["resumed_from"]
    ]
    out["samples_per_s"] = {
        "embed": out.get("embeddings", {}).get("clips_per_s"),
        "finetune": round(float(np.mean(trained)), 2) if trained else None,
    }
    return out


def main() -> None:
    """Entry point of the DVC stage: a skip (no weights offline, no GPU) prints one line and exits 0."""
    metrics = run_flow(wav2vec2_stage, settings=load_settings())
    if metrics["status"].startswith("skipped"):
        print(f"wav2vec2: {metrics['status']}")


if __name__ == "__main__":
    exit_on_error(main)
