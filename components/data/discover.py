"""Finding RAVDESS audio files under a folder or inside a .zip, by file name."""

from __future__ import annotations

import contextlib
import os
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from components.data.audio import READABLE_SUFFIXES, regular_file
from components.data.ravdess import AUDIO_EXTENSIONS, ClipLabels, parse_name
from components.errors import SerError

ZIP_SEPARATOR = "::"  # "archive.zip::Actor_01/03-01-….wav" names a member of a zip
_ACTOR_DIR = re.compile(r"^Actor_(\d+)$", re.IGNORECASE)
_OTHER_FORMAT = "{suffix} audio is not a RAVDESS clip (RAVDESS is WAV; the pipeline reads .wav/.flac)"


@dataclass(frozen=True)
class AudioFile:
    """One discovered RAVDESS clip: where it is and what its name says."""

    location: str
    labels: ClipLabels

    @property
    def clip_id(self) -> str:
        """The clip's seven-field id."""
        return self.labels.clip_id


@dataclass
class Discovery:
    """What a search found: usable clips and files left out, each with its reason."""

    files: list[AudioFile] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)


def read_bytes(location: str) -> bytes:
    """Read a discovered file, on disk or inside a zip (``zip::member``).

    On disk only a regular file is read: a ``.wav`` linked to ``/dev/zero`` would never end.
    """
    archive, sep, member = location.partition(ZIP_SEPARATOR)
    try:
        if not sep:
            return regular_file(location).read_bytes()
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)
    except (OSError, KeyError, zipfile.BadZipFile) as err:
        raise SerError(f"{location}: cannot be read ({err})") from err


@contextlib.contextmanager
def open_location(location: str) -> Iterator[BinaryIO]:
    """Open a discovered file for streaming, on disk (a regular file only) or inside a zip.

    Raises:
        SerError: Missing, a dangling symlink, a device or FIFO, empty, or unreadable.
    """
    archive, sep, member = location.partition(ZIP_SEPARATOR)
    try:
        if not sep:
            with regular_file(location).open("rb") as file:
                yield file
            return
        with zipfile.ZipFile(archive) as zf, zf.open(member) as file:
            yield file
    except (OSError, KeyError, zipfile.BadZipFile) as err:
        raise SerError(f"{location}: cannot be read ({err})") from err


def check_actor_folder(relative: str, labels: ClipLabels) -> str | None:
    """A problem if an ``Actor_XX`` folder on the path disagrees with the name's actor (None: agrees)."""
    for part in Path(relative).parts[:-1]:
        match = _ACTOR_DIR.match(part)
        if match and int(match.group(1)) != labels.actor:
            return f"folder {part} does not match the actor field {labels.actor:02d} of the name"
    return None


def _walk_folder(root: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Audio file paths under ``root`` (sorted), following no symlinked folders (no loops)."""
    found, problems = [], []

    def on_error(err: OSError) -> None:
        problems.append((str(err.filename), f"cannot be listed ({err.strerror})"))

    for folder, dirs, names in os.walk(root, onerror=on_error, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            if name.startswith("._"):
                continue  # macOS resource forks
            suffix = Path(name).suffix.lower()
            if suffix in AUDIO_EXTENSIONS:
                found.append(os.path.join(folder, name))
            elif suffix in READABLE_SUFFIXES:  # `ser predict` reads it: say why it is not a clip here
                problems.append((os.path.join(folder, name), _OTHER_FORMAT.format(suffix=suffix)))
    return found, problems


def _zip_members(archive: Path) -> list[str]:
    from components.data.archive import iter_zip_audio

    return [name for name, _ in iter_zip_audio(archive)]


def list_audio(
    root: str | Path, corpus: str = "RAVDESS"
) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """Every audio file under a folder (recursively, sorted) or inside a zip, by location.

    Args:
        root: A folder, or a ``.zip`` file.
        corpus: The corpus named in the error message.

    Returns:
        ``(locations, relatives, unlisted)``: where each file is (a path or ``zip::member``),
        its path relative to ``root`` (POSIX in a zip), and folders that could not be listed.

    Raises:
        SerError: ``root`` does not exist, or is neither a folder nor a readable zip.
    """
    root = Path(root)
    if root.is_dir():
        locations, unlisted = _walk_folder(root)
        return locations, [os.path.relpath(loc, root) for loc in locations], unlisted
    if root.is_file() and root.suffix.lower() == ".zip":
        try:
            members = _zip_members(root)
        except zipfile.BadZipFile as err:
            raise SerError(f"{root}: not a readable zip file ({err})") from err
        return [f"{root}{ZIP_SEPARATOR}{m}" for m in members], members, []
    if root.exists():
        raise SerError(f"{root}: expected a folder or a .zip of {corpus} audio")
    raise SerError(f"{root}: no such folder or zip file")


def discover(root: str | Path) -> Discovery:
    """Find RAVDESS clips under a folder (recursively) or inside a zip.

    Speech and song zips unpack to the same ``Actor_XX`` folder names, so clips are told
    apart by file name, never by folder. A file is rejected (with a reason) when its name
    does not parse, when its ``Actor_XX`` folder disagrees with its actor field, or when
    its clip id was already seen elsewhere (the first location in sorted order is kept).

    Args:
        root: A folder, or a ``.zip`` file.

    Returns:
        The clips found, sorted by location, and the rejected files with reasons.

    Raises:
        SerError: ``root`` does not exist, or is neither a folder nor a readable zip.
    """
    result = Discovery()
    locations, relatives, result.rejected = list_audio(root)
    first_seen: dict[str, str] = {}
    for location, relative in zip(locations, relatives, strict=True):
        try:
            labels = parse_name(relative)
        except SerError as err:
            result.rejected.append((location, str(err).split(": ", 1)[-1]))
            continue
        problem = check_actor_folder(relative, labels)
        if problem:
            result.rejected.append((location, problem))
        elif labels.clip_id in first_seen:
            result.rejected.append(
                (location, f"duplicate clip id {labels.clip_id} (also at {first_seen[labels.clip_id]})")
            )
        else:
            first_seen[labels.clip_id] = location
            result.files.append(AudioFile(location, labels))
    return result
