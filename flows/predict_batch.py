"""Flow ``predict-batch``: a folder of audio files → a CSV of predictions, with the ``champion`` model.

The deployment's job is ``ser predict DIR --csv OUT``: the same reading, windowing and batching
(components/serving/predict.py), run by Prefect on demand or on a schedule, with a summary artifact.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from components.errors import SerError
from components.paths import PARAMS_FILE
from components.registry.model_io import load_model, use_store
from components.runtime.files import project_root
from components.serving.adaptation import predict_by_speaker
from components.serving.predict import (
    find_audio,
    predict_files,
    summarize,
    write_results_csv,
)
from components.settings import Tracking, find_settings
from flows import fail_cleanly


def resolve(path: str, project: Path) -> Path:
    """A relative path is relative to the project checkout, as in params.yaml."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else project / candidate


@flow(name="predict-batch")
@fail_cleanly
def predict_batch(
    input_dir: str,
    output_dir: str = "predictions",
    model: str | None = None,
    batch_size: int = 32,
    project_dir: str | None = None,
    speaker_pattern: str | None = None,
    speaker_from: str | None = None,
    speaker_min_clips: int | None = None,
) -> dict[str, Any]:
    """Predict the emotion of every audio file under ``input_dir`` and write one CSV row per file.

    Args:
        input_dir: Folder of audio files (searched recursively; any rate, channels and length).
        output_dir: Folder for ``predictions_<UTC time>.csv`` (created if needed).
        model: MLflow model URI; default the ``champion`` of ``tracking.model_name``.
        batch_size: Clips (or windows of long recordings) per model call.
        project_dir: The checkout whose params.yaml names the MLflow store (default: SER_PROJECT_DIR or cwd).
        speaker_pattern: Speaker adaptation: a regex with a ``speaker`` group, searched in file names,
            e.g. ``(?P<speaker>[0-9]+)[.]wav$``; each speaker's files are re-centred on the training mean.
        speaker_from: Speaker adaptation: ``folder`` (one folder per speaker) or a CSV of ``path``
            and ``speaker`` columns (relative to the project).
        speaker_min_clips: Speakers with fewer files get the plain model (default: the model's own).

    Returns:
        The CSV's path, the model version used, and counts of predicted and failed files.
    """
    from prefect.artifacts import create_markdown_artifact

    logger = get_run_logger()
    project = project_root(project_dir)
    folder = resolve(input_dir, project)
    if not folder.is_dir():
        raise SerError(f"{folder}: no such folder of audio files")
    paths, missing = find_audio([str(folder)])
    if not paths:
        raise SerError(missing[0].error if missing else f"{folder}: no audio files")
    settings = find_settings(project / PARAMS_FILE)  # none: MLFLOW_TRACKING_URI names the store
    model = model or (settings.tracking if settings else Tracking()).champion_uri
    use_store(settings.tracking if settings else None, project)
    loaded = load_model(model)
    about = loaded.description
    checks = loaded.clip_checks  # the per-clip checks the model was trained with, not today's params.yaml
    notes = []
    if speaker_pattern is not None or speaker_from is not None:
        source = speaker_from if speaker_from in (None, "folder") else str(resolve(speaker_from, project))
        options = {"clip_dur": loaded.clip_dur, "batch_size": batch_size, "checks": checks}
        adapt = (speaker_pattern, source, speaker_min_clips)
        results, notes = predict_by_speaker(loaded, paths, *adapt, progress=False, **options)
        for note in notes:
            logger.info("%s", note.line())
    else:
        results = predict_files(
            paths,
            loaded.predict_signals,
            loaded.clip_dur,
            batch_size=batch_size,
            progress=False,
            checks=checks,
        )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = resolve(output_dir, project) / f"predictions_{stamp}.csv"
    write_results_csv(out, results)
    n_ok = sum(r.label is not None for r in results)
    failed = [r.error for r in results if r.error]
    version = f"{about.get('name', model)} v{about['version']}" if about.get("version") else model
    logger.info("%d of %d files predicted with %s → %s", n_ok, len(results), version, out)
    for error in failed:
        logger.warning("%s", error)
    summary = summarize(results)
    lines = [
        "# Batch prediction",
        "",
        f"- **Model**: {version} ({about.get('tags', {}).get('model_name', '?')})",
        f"- **Input**: `{folder}`: {len(results)} files, {n_ok} predicted, {len(failed)} failed",
        f"- **CSV**: `{out}`",
    ]
    lines += [f"- {note.line()}" for note in notes]
    if summary is not None:
        scores = f"accuracy {summary['accuracy']:.3f}, UAR {summary['uar']:.3f}"
        lines.append(f"- **RAVDESS-named files**: {summary['n']}, {scores}")
    lines += [f"- failed: {error}" for error in failed[:20]]
    create_markdown_artifact(
        markdown="\n".join(lines) + "\n", key="predict-batch", description="Batch prediction"
    )
    if n_ok == 0:
        raise SerError(f"none of the {len(results)} files under {folder} could be predicted (see the log)")
    return {
        "csv": str(out),
        "model": version,
        "n_files": len(results),
        "n_predicted": n_ok,
        "n_failed": len(failed),
        "speakers": [note.line() for note in notes],
    }
