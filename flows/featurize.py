"""Stage ``featurize``: Parquet feature caches for every validated clip.

One table per feature set under ``data/features/``, one row per clip keyed by clip id and
content hash. Clips whose content is unchanged are reused, so only new or changed audio is
extracted when the corpus grows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger

from components.data.discover import discover
from components.data.metadata import build_metadata
from components.errors import SerError
from components.features.featurize import FeaturizeSummary, featurize
from components.features.sets import extract_params
from components.paths import CLIPS_TABLE, FEATURES_DIR, METRICS_DIR
from components.runtime.files import exit_on_error, write_json
from components.runtime.locks import hold_lock
from components.runtime.runners import chunk_map
from components.settings import Settings, load_settings
from flows import fail_cleanly, run_flow


def summarize(summary: FeaturizeSummary) -> dict[str, Any]:
    """Plain metrics of a featurize run (also what DVC shows with ``dvc metrics show``)."""
    return {
        "n_clips": summary.n_clips,
        "n_failed": len(summary.failures),
        "seconds": round(summary.seconds, 2),
        "clips_per_s": round(summary.n_clips / summary.seconds, 1) if summary.seconds else None,
        "sets": {name: vars(counts) for name, counts in summary.sets.items()},
    }


def extract_features(
    clips: pd.DataFrame, out_dir: Path, settings: Settings, feature_sets=None, n_jobs=None
) -> dict[str, Any]:
    """Extract the configured sets for ``clips`` into ``out_dir``; fail if no clip could be read.

    Chunks run on the ``orchestration.task_runner``: featurize's process pool or Dask. One run
    at a time writes ``out_dir``: a second one refuses with a message naming the first.
    """
    section = settings.featurize
    feature_sets = feature_sets or list(section.feature_sets)
    params = extract_params(settings.preprocess, section)
    with (
        hold_lock(out_dir, "featurize", inside=True),
        chunk_map(settings.orchestration, feature_sets, params) as map_fn,
    ):
        summary = featurize(
            clips, out_dir, feature_sets, params, n_jobs=n_jobs or section.n_jobs, map_fn=map_fn
        )
    if summary.n_clips and len(summary.failures) == summary.n_clips:
        raise SerError(f"featurize: none of the {summary.n_clips} clips could be read: {summary.failures[0]}")
    return summarize(summary)


@flow(name="featurize")
@fail_cleanly
def featurize_stage(
    settings: Settings | None = None, clips_table: Path = CLIPS_TABLE, out_dir: Path = FEATURES_DIR
) -> dict[str, Any]:
    """Extract features for the clips the validate stage accepted.

    Args:
        settings: The pipeline's settings; None reads params.yaml in the working folder.
        clips_table: The validate stage's accepted clips.
        out_dir: Folder for the feature tables.
    """
    logger = get_run_logger()
    clips = pd.read_parquet(clips_table)
    metrics = extract_features(clips, Path(out_dir), settings or load_settings())
    for name, counts in metrics["sets"].items():
        logger.info("featurize %s: %s", name, counts)
    if metrics["n_failed"]:
        logger.warning("featurize: %d clips could not be read and were left out", metrics["n_failed"])
    return metrics


def featurize_data(
    data: Path, out: Path, settings: Settings, feature_sets=None, n_jobs=None
) -> dict[str, Any]:
    """Featurize a folder or zip directly (outside DVC): every readable RAVDESS clip in it."""
    with hold_lock(out, "featurize", inside=True):  # refuse before reading the clips, not after
        clips, _ = build_metadata(discover(data), silence_dbfs=settings.validate_.silence_dbfs)
        if clips.empty:
            raise SerError(f"{data}: no readable RAVDESS clips in it; nothing to featurize")
        return extract_features(clips, Path(out), settings, feature_sets, n_jobs)


def main() -> None:
    """Entry point of the DVC stage."""
    settings = load_settings()  # a bad setting is refused before anything else happens
    # before Prefect starts: a second run refuses at once
    with hold_lock(FEATURES_DIR, "featurize", inside=True):
        metrics = run_flow(featurize_stage, settings=settings)
        write_json(METRICS_DIR / "featurize.json", metrics)


if __name__ == "__main__":
    exit_on_error(main)
