"""Stage ``validate``: a metadata table of the raw clips, checked by a Great Expectations suite.

Clips that cannot be read or fail a per-row check are listed with their reason in the
rejected table and left out; the stage fails when their share exceeds
``validate.max_rejected_share``. Raw data of named sources (``data/raw/<name>/``, each folder's
corpus in ``sources.json``) is checked source by source, each by its corpus's suite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from components.data.clip_checks import ClipLimits
from components.data.corpora import get_corpus
from components.data.discover import discover
from components.data.ingest import read_sources
from components.data.metadata import build_metadata
from components.data.parquet import write_table
from components.data.validate import SUITE_NAME, ValidationReport, data_context, validate_clips
from components.data.validate_corpus import corpus_discovery, merge_reports, validate_corpus_clips
from components.paths import CLIPS_TABLE, METRICS_DIR, RAW_DIR, REJECTED_TABLE, VALIDATION_DOCS_DIR
from components.runtime.files import exit_on_error, write_json, write_text
from components.settings import Validate, load_settings
from flows import fail_cleanly, run_flow


def check_data(data: Path, settings: Validate, docs_dir: Path | None) -> ValidationReport:
    """Discover, describe and validate the clips under ``data`` (folder or zip).

    ``data`` holds RAVDESS, or named sources' folders with a record of each one's corpus.
    """
    sources = read_sources(data) if data.is_dir() else None
    if sources is None:
        return check_source(data, "ravdess", settings, docs_dir)
    context = data_context(docs_dir)  # one Data Docs site: its index lists every source's suite
    return merge_reports(
        {
            name: check_source(data / name, corpus, settings, docs_dir, context, f"{SUITE_NAME}-{name}")
            for name, corpus in sources.items()
        },
        sources,
    )


def check_source(
    data: Path,
    corpus_name: str,
    settings: Validate,
    docs_dir: Path | None,
    context: Any = None,
    suite_name: str | None = None,
) -> ValidationReport:
    """Discover, describe and validate one corpus's clips, with its corpus's suite (named ``suite_name``)."""
    corpus = get_corpus(corpus_name)
    discovery = discover(data) if corpus_name == "ravdess" else corpus_discovery(corpus, corpus.scan(data))
    # a file whose header is out of bounds (an hour long, 1 Hz) is rejected before it is decoded
    limits = ClipLimits.from_mapping(settings.model_dump())
    clips, rejected = build_metadata(
        discovery,
        silence_dbfs=settings.silence_dbfs,
        n_jobs=settings.n_jobs,
        limits=limits,
        corpus=corpus_name,
    )
    # the Great Expectations suite is built from the section's values (its expectations' arguments)
    params = settings.model_dump()
    if corpus_name == "ravdess":
        return validate_clips(clips, rejected, params, docs_dir, context, suite_name or SUITE_NAME)
    return validate_corpus_clips(corpus, clips, rejected, params, docs_dir, context, suite_name)


def save_report(report: ValidationReport, out_dir: Path) -> None:
    """Write the accepted-clips table (Parquet) and the rejected table (CSV), atomically."""
    write_table(report.clips, out_dir / CLIPS_TABLE.name)
    write_text(out_dir / REJECTED_TABLE.name, report.rejected.to_csv(index=False))


@flow(name="validate")
@fail_cleanly
def validate(
    settings: Validate | None = None,
    data: Path = RAW_DIR,
    out_dir: Path = CLIPS_TABLE.parent,
    docs_dir: Path | None = VALIDATION_DOCS_DIR,
) -> dict[str, Any]:
    """Validate ``data``, save the tables, and fail when too many files were rejected.

    Args:
        settings: The ``validate`` settings; None reads params.yaml in the working folder.
        data: Folder or .zip of RAVDESS audio, or the raw folder of named sources.
        out_dir: Folder for the accepted-clips table and the rejected table.
        docs_dir: Folder for Great Expectations Data Docs; None = none written.
    """
    settings = settings or load_settings().validate_
    report = check_data(Path(data), settings, Path(docs_dir) if docs_dir else None)
    get_run_logger().info("validate:\n%s", report.summary())
    save_report(report, Path(out_dir))
    report.raise_if_failed()
    return report.metrics()


def main() -> None:
    """Entry point of the DVC stage."""
    metrics = run_flow(validate, settings=load_settings().validate_)
    write_json(METRICS_DIR / "validate.json", metrics)


if __name__ == "__main__":
    exit_on_error(main)
