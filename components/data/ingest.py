"""Bringing a source of RAVDESS audio into the raw-data folder, changing only what changed."""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from components.data.ravdess import AUDIO_EXTENSIONS
from components.errors import SerError
from components.runtime.files import write_json

READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
SOURCES_FILE = "sources.json"  # in the raw folder of named sources: each folder's corpus


@dataclass
class SyncSummary:
    """What a sync changed in the raw folder."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0

    @property
    def n_changes(self) -> int:
        """Files added, changed or removed."""
        return len(self.added) + len(self.changed) + len(self.removed)


def list_audio(root: Path, metadata_files: Collection[str] = ()) -> dict[str, Path]:
    """Audio files under ``root`` by their path relative to it (symlinked folders not followed).

    Args:
        root: The folder to walk.
        metadata_files: File names listed too, wherever they are (a corpus's label files, e.g.
            CREMA-D's ``VideoDemographics.csv``: ``Corpus.metadata_files``).
    """
    found: dict[str, Path] = {}
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            path = Path(folder) / name
            wanted = path.suffix.lower() in AUDIO_EXTENSIONS or name in metadata_files
            if wanted and not name.startswith("._") and path.is_file():
                found[path.relative_to(root).as_posix()] = path
    return found


def fingerprint_tree(root: Path, metadata_files: Collection[str] = ()) -> str:
    """A cheap fingerprint of a folder's audio (and metadata) files: names, sizes, modification times."""
    digest = hashlib.sha256()
    for relative, path in list_audio(root, metadata_files).items():
        info = path.stat()
        digest.update(f"{relative}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def fingerprint_source(source: str, settings: dict, metadata_files: Collection[str] = ()) -> str:
    """A fingerprint of what ``ingest.source`` points at, cheap enough to check on every run.

    Args:
        source: ``demo``, ``zenodo`` or a folder/zip path.
        settings: The settings that shape the result (demo size and seed, extraction limit).
        metadata_files: A folder's metadata file names that count too (see :func:`list_audio`).
    """
    if source in ("demo", "zenodo"):
        detail = source
    else:
        path = Path(source)
        if path.is_dir():
            detail = fingerprint_tree(path, metadata_files)
        elif path.is_file():
            info = path.stat()
            detail = f"{path.resolve()}\0{info.st_size}\0{info.st_mtime_ns}"
        else:
            raise SerError(f"ingest.source {source!r}: no such folder or zip; use 'demo', 'zenodo' or a path")
    return hashlib.sha256(json.dumps([detail, settings], sort_keys=True).encode()).hexdigest()


def sync_audio(src_root: Path, dst_root: Path, metadata_files: Collection[str] = ()) -> SyncSummary:
    """Make ``dst_root`` hold exactly the audio files of ``src_root``, copying only what differs.

    Files are copied atomically (temporary name, then rename) and left read-only: raw data is
    never edited in place. Other files in ``dst_root`` are left alone.

    Args:
        src_root: Folder to copy from (never modified).
        dst_root: The raw-data folder.
        metadata_files: File names synced with the audio, wherever they are (a corpus's label
            files: CREMA-D's demographics), so the adapter reading ``dst_root`` finds them.

    Returns:
        The relative paths added, changed and removed.
    """
    summary = SyncSummary()
    dst_root.mkdir(parents=True, exist_ok=True)
    sources = list_audio(src_root, metadata_files)
    existing = list_audio(dst_root, metadata_files)
    for relative, src in sources.items():
        dst = dst_root / relative
        if relative in existing and filecmp.cmp(src, dst, shallow=False):
            summary.unchanged += 1
            continue
        (summary.changed if relative in existing else summary.added).append(relative)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(src, tmp)
        tmp.chmod(READ_ONLY)
        os.replace(tmp, dst)
    for relative in sorted(set(existing) - set(sources)):
        (dst_root / relative).unlink()
        summary.removed.append(relative)
    return summary


def sync_sources(
    sources: dict[str, Path], dst_root: Path, metadata_files: Mapping[str, Collection[str]] | None = None
) -> SyncSummary:
    """Make ``dst_root/<name>/`` hold exactly each named source's audio, and nothing else be audio.

    As :func:`sync_audio` for each source into its own folder; audio files in ``dst_root`` outside
    those folders (an earlier single source, a source since removed) are removed.

    Args:
        sources: Folder to copy from (never modified) by source name.
        dst_root: The raw-data folder.
        metadata_files: By source name, the metadata file names its corpus reads (synced too).

    Returns:
        What changed, paths relative to ``dst_root``.
    """
    summary = SyncSummary()
    metadata_files = metadata_files or {}
    for name, src_root in sources.items():
        part = sync_audio(src_root, dst_root / name, metadata_files.get(name, ()))
        summary.added += [f"{name}/{relative}" for relative in part.added]
        summary.changed += [f"{name}/{relative}" for relative in part.changed]
        summary.removed += [f"{name}/{relative}" for relative in part.removed]
        summary.unchanged += part.unchanged
    every = {file for files in metadata_files.values() for file in files}
    for relative in list_audio(dst_root, every):
        if relative.split("/", 1)[0] not in sources or "/" not in relative:
            (dst_root / relative).unlink()
            summary.removed.append(relative)
    return summary


def write_sources(raw_dir: Path, corpora: dict[str, str] | None) -> None:
    """Record which corpus each source folder of ``raw_dir`` holds; None (one RAVDESS source) removes it."""
    path = Path(raw_dir) / SOURCES_FILE
    if corpora is None:
        path.unlink(missing_ok=True)
    else:
        write_json(path, {"sources": [{"name": name, "corpus": corpus} for name, corpus in corpora.items()]})


def read_sources(raw_dir: Path) -> dict[str, str] | None:
    """The corpus of each source folder of ``raw_dir``, by name; None when it holds one RAVDESS source.

    Raises:
        SerError: The record is not readable JSON of the shape :func:`write_sources` writes.
    """
    path = Path(raw_dir) / SOURCES_FILE
    if not path.is_file():
        return None
    try:
        return {item["name"]: item["corpus"] for item in json.loads(path.read_text())["sources"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SerError(f"{path}: not a record of named sources ({err!r}); run ingest again") from None
