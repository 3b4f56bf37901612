"""Bringing a source of RAVDESS audio into the raw-data folder, changing only what changed."""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

from components.errors import SerError
from components.data.ravdess import AUDIO_EXTENSIONS

READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH


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


def list_audio(root: Path) -> dict[str, Path]:
    """Audio files under ``root`` by their path relative to it (symlinked folders not followed)."""
    found: dict[str, Path] = {}
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            path = Path(folder) / name
            if path.suffix.lower() in AUDIO_EXTENSIONS and not name.startswith("._") and path.is_file():
                found[path.relative_to(root).as_posix()] = path
    return found


def fingerprint_tree(root: Path) -> str:
    """A cheap fingerprint of a folder's audio files: their names, sizes and modification times."""
    digest = hashlib.sha256()
    for relative, path in list_audio(root).items():
        info = path.stat()
        digest.update(f"{relative}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def fingerprint_source(source: str, settings: dict) -> str:
    """A fingerprint of what ``ingest.source`` points at, cheap enough to check on every run.

    Args:
        source: ``demo``, ``zenodo`` or a folder/zip path.
        settings: The settings that shape the result (demo size and seed, extraction limit).
    """
    if source in ("demo", "zenodo"):
        detail = source
    else:
        path = Path(source)
        if path.is_dir():
            detail = fingerprint_tree(path)
        elif path.is_file():
            info = path.stat()
            detail = f"{path.resolve()}\0{info.st_size}\0{info.st_mtime_ns}"
        else:
            raise SerError(f"ingest.source {source!r}: no such folder or zip; use 'demo', 'zenodo' or a path")
    return hashlib.sha256(json.dumps([detail, settings], sort_keys=True).encode()).hexdigest()


def sync_audio(src_root: Path, dst_root: Path) -> SyncSummary:
    """Make ``dst_root`` hold exactly the audio files of ``src_root``, copying only what differs.

    Files are copied atomically (temporary name, then rename) and left read-only: raw data is
    never edited in place. Non-audio files in ``dst_root`` are left alone.

    Args:
        src_root: Folder to copy from (never modified).
        dst_root: The raw-data folder.

    Returns:
        The relative paths added, changed and removed.
    """
    summary = SyncSummary()
    dst_root.mkdir(parents=True, exist_ok=True)
    sources = list_audio(src_root)
    existing = list_audio(dst_root)
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
