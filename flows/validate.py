"""Stage ``validate``: a metadata table of the raw clips, checked by a Great Expectations suite.

Clips that cannot be read or fail a per-row check are listed with their reason in the
rejected table and left out; the stage fails when their share exceeds
``validate.max_rejected_share``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from components.data.clip_checks import ClipLimits
from components.data.discover import discover
from components.data.metadata import build_metadata
from components.data.parquet import write_table
from components.data.validate import ValidationReport, validate_clips
from components.paths import CLIPS_TABLE, METRICS_DIR, RAW_DIR, REJECTED_TABLE, VALIDATION_DOCS_DIR
from components.runtime.files import exit_on_error, write_json, write_text
from components.settings import Validate, load_settings
from flows import fail_cleanly, run_flow


def check_data(data: Path, settings: Validate, docs_dir: Path | None) -> ValidationReport:
    """Discover, describe and validate the clips under ``data`` (folder or zip)."""
    discovery = discover(data)
    # a file whose header is out of bounds (an hour long, 1 Hz) is rejected before it is decoded
    limits = ClipLimits.from_mapping(settings.model_dump())
    clips, rejected = build_metadata(
        discovery, silence_dbfs=settings.silence_dbfs, n_jobs=settings.n_jobs, limits=limits
    )
    # the Great Expectations suite is built from the section's values (its expectations' arguments)
    return validate_clips(clips, rejected, settings.model_dump(), docs_dir=docs_dir)


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
        data: Folder or .zip of RAVDESS audio.
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
