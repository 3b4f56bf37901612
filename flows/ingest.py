"""Stage ``ingest``: bring the configured audio source into ``data/raw``.

``ingest.source`` is ``demo`` (synthesised offline corpus), ``zenodo`` (the official zips,
downloaded and checked), or a local folder or .zip; or a list of named sources, each with its
corpus, staged into ``data/raw/<name>/`` (``sources.json`` there says each folder's corpus).
The stage re-runs on every ``dvc repro``
(DVC cannot see an outside folder change) but returns at once when the source's fingerprint
is unchanged, and it copies only files that differ, so ``data/raw`` keeps its DVC hash.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from components.data import synth, synth_voice
from components.data.archive import safe_extract
from components.data.corpora import get_corpus
from components.data.fetch import fetch_ravdess
from components.data.ingest import (
    fingerprint_source,
    fingerprint_tree,
    sync_audio,
    sync_sources,
    write_sources,
)
from components.data.ravdess import AUDIO_EXTENSIONS
from components.data.synth import write_corpus
from components.errors import SerError
from components.paths import DOWNLOAD_DIR, INGEST_STATE_FILE, METRICS_DIR, RAW_DIR
from components.runtime.files import exit_on_error, write_json
from components.settings import Ingest, Source, load_settings
from flows import fail_cleanly, run_flow


def stage_source(source: str, staging: Path, settings: Ingest, metadata_files: tuple[str, ...] = ()) -> Path:
    """Materialise the source as a folder of audio and return it (``staging`` is scratch space).

    A zip's ``metadata_files`` (a corpus's label files, found by name) are extracted with its audio.
    """
    if source == "demo":
        write_corpus(staging, n_actors=settings.demo_actors, seed=settings.demo_seed)
        return staging
    if source == "zenodo":
        for archive in fetch_ravdess(DOWNLOAD_DIR):
            # speech and song zips both unpack to Actor_XX/: keep them apart
            kind = "song" if "song" in archive.name.lower() else "speech"
            safe_extract(archive, staging / kind, max_total_bytes=settings.max_extract_bytes)
        return staging
    path = Path(source)
    if path.is_file() and path.suffix.lower() == ".zip":
        suffixes = tuple(sorted({*AUDIO_EXTENSIONS, *(Path(name).suffix.lower() for name in metadata_files)}))
        safe_extract(path, staging, max_total_bytes=settings.max_extract_bytes, allowed_suffixes=suffixes)
        return staging
    if path.is_dir():
        return path
    raise SerError(f"ingest.source {source!r}: no such folder or .zip; use 'demo', 'zenodo' or a path")


def stage_sources(sources: list[Source], staging: Path, settings: Ingest) -> dict[str, Path]:
    """Materialise each named source as a folder of audio (``staging/<name>`` is its scratch space)."""
    folders = {}
    for source in sources:
        if source.path.lower().endswith(".csv"):
            raise SerError(
                f"ingest.source {source.name}: {source.path} is a manifest; ingest stages folders and "
                "zips (a folder per emotion for custom data); `ser evaluate` reads manifests"
            )
        files = get_corpus(source.corpus).metadata_files
        folders[source.name] = stage_source(source.path, staging / source.name, settings, files)
    return folders


@flow(name="ingest")
@fail_cleanly
def ingest(settings: Ingest | None = None, raw_dir: Path = RAW_DIR) -> dict[str, Any]:
    """Copy the source's audio into ``raw_dir``, adding, replacing and removing only what differs.

    Args:
        settings: The ``ingest`` settings; None reads params.yaml in the working folder.
        raw_dir: The immutable copy of the source's audio.
    """
    settings = settings or load_settings().ingest
    logger = get_run_logger()
    raw_dir = Path(raw_dir)
    raw_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=raw_dir.parent, prefix=".ingest-"))
    try:
        if settings.sources:
            folders = stage_sources(settings.sources, staging, settings)
            summary = sync_sources(folders, raw_dir, metadata_files(settings))
            write_sources(raw_dir, {source.name: source.corpus for source in settings.sources})
        else:
            summary = sync_audio(stage_source(settings.source, staging, settings), raw_dir)
            write_sources(raw_dir, None)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info(
        "ingest: %d added, %d changed, %d removed, %d unchanged",
        len(summary.added),
        len(summary.changed),
        len(summary.removed),
        summary.unchanged,
    )
    return {
        "source": settings.describe(),
        "n_files": summary.unchanged + len(summary.added) + len(summary.changed),
        "n_added": len(summary.added),
        "n_changed": len(summary.changed),
        "n_removed": len(summary.removed),
    }


def metadata_files(settings: Ingest) -> dict[str, tuple[str, ...]]:
    """By named source, the files besides audio its corpus reads (CREMA-D's demographics): copied too."""
    return {source.name: get_corpus(source.corpus).metadata_files for source in settings.sources}


def source_settings(settings: Ingest) -> dict[str, Any]:
    """The settings whose change must re-run ingest; for the demo corpus, the synthesiser's code too."""
    out = settings.model_dump(include={"demo_actors", "demo_seed", "max_extract_bytes"})
    if "demo" in [settings.source, *(source.path for source in settings.sources)]:
        code = hashlib.sha256()
        for module in (synth, synth_voice):
            code.update(Path(module.__file__).read_bytes())
        out["synth_code"] = code.hexdigest()
    return out


def source_fingerprint(settings: Ingest) -> str:
    """:func:`fingerprint_source` of the plain source, or of every named source with its corpus."""
    if not settings.sources:
        return fingerprint_source(settings.source, source_settings(settings))
    files, shaping = metadata_files(settings), source_settings(settings)
    parts = [
        [source.name, source.corpus, fingerprint_source(source.path, shaping, files[source.name])]
        for source in settings.sources
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def main() -> None:
    """Entry point of the DVC stage: skip at once when neither source nor raw folder changed."""
    settings = load_settings().ingest
    fingerprint = source_fingerprint(settings)
    raw_files = {file for files in metadata_files(settings).values() for file in files}
    state = json.loads(INGEST_STATE_FILE.read_text()) if INGEST_STATE_FILE.exists() else {}
    if (
        state.get("source") == fingerprint
        and RAW_DIR.is_dir()
        and state.get("raw") == fingerprint_tree(RAW_DIR, raw_files)
    ):
        print(f"ingest: source {settings.describe()!r} unchanged since the last run; nothing to do")
        return
    result = run_flow(ingest, settings=settings)
    write_json(METRICS_DIR / "ingest.json", result)
    write_json(INGEST_STATE_FILE, {"source": fingerprint, "raw": fingerprint_tree(RAW_DIR, raw_files)})


if __name__ == "__main__":
    exit_on_error(main)
