"""Reading audio out of zip archives without trusting them.

Every member name is checked before anything is written: absolute paths, drive letters, ``..``
components, symlinks and paths that resolve outside the target folder make the whole archive
refused. Sizes are checked twice against a budget, once as declared in the zip's directory and
again while decompressing, so a zip bomb stops early and leaves nothing behind.

The official RAVDESS speech and song zips both unpack to ``Actor_01/ ... Actor_24/``, so extract
each into its own folder (``raw/speech``, ``raw/song``); one folder for both would mix them.
"""

from __future__ import annotations

import contextlib
import logging
import lzma
import os
import re
import secrets
import stat
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from components.errors import SerError
from components.data.ravdess import AUDIO_EXTENSIONS

MAX_TOTAL_BYTES = 4_000_000_000  # the official RAVDESS audio zips unpack to about 1.1 GB together
MAX_MEMBERS = 20_000  # the speech zip holds 1,440 clips, the song zip 1,012
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_COPY_CHUNK = 1 << 20
_log = logging.getLogger(__name__)


def iter_zip_audio(
    zip_path: Path, allowed_suffixes: tuple[str, ...] = AUDIO_EXTENSIONS
) -> Iterator[tuple[str, zipfile.ZipInfo]]:
    """The audio members of a zip, for reading them in place with ``ZipFile.open(info)``.

    The whole archive is checked before the first member is yielded, with the same rules as
    :func:`safe_extract`; directories, macOS ``__MACOSX/`` and ``._*`` files and other suffixes
    are passed over.

    Args:
        zip_path: The zip file.
        allowed_suffixes: Lower-case suffixes of the members to yield.

    Yields:
        ``(name, info)``: the member's clean POSIX name (e.g. ``Actor_01/03-01-01-01-01-01-01.wav``)
        and its ``ZipInfo``.

    Raises:
        SerError: The file is not a readable zip, or a member is unsafe (the message names it).
    """
    with _open_zip(zip_path) as archive:
        members, _ = _audio_members(archive, zip_path, allowed_suffixes)
    # members are read whole into memory: the same zip-bomb guard as extraction
    declared = sum(info.file_size for _, info in members)
    if len(members) > MAX_MEMBERS or declared > MAX_TOTAL_BYTES:
        raise SerError(
            f"{zip_path}: {len(members)} audio members that would unpack to {declared} bytes, more than the "
            f"{MAX_MEMBERS} members or {MAX_TOTAL_BYTES} bytes allowed (a zip bomb?); refusing the archive"
        )
    for parts, info in members:
        yield "/".join(parts), info


def safe_extract(
    zip_path: Path,
    dest_dir: Path,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    max_members: int = MAX_MEMBERS,
    allowed_suffixes: tuple[str, ...] = AUDIO_EXTENSIONS,
) -> list[Path]:
    """Extract the audio files of a zip into ``dest_dir``, refusing anything unsafe.

    Each file is written to a temporary name beside its target and renamed into place, so a
    file under ``dest_dir`` is always complete. Files with other suffixes, directories and macOS
    junk are skipped (logged at INFO). Extract the speech and song zips into separate folders.

    Args:
        zip_path: The zip file.
        dest_dir: Where the member paths are recreated; created when missing.
        max_total_bytes: Most bytes the extracted files may take together (zip-bomb guard).
        max_members: Most entries the archive may list.
        allowed_suffixes: Lower-case suffixes of the members to extract.

    Returns:
        The extracted files, in archive order.

    Raises:
        SerError: The zip is unreadable or corrupt, a member is unsafe (absolute, ``..``, a
            symlink, outside ``dest_dir``, encrypted, a duplicate), or the archive is too large.
            Files this call wrote are removed again before raising.
    """
    root = Path(dest_dir).resolve()
    with _open_zip(zip_path) as archive:
        infos = archive.infolist()
        if len(infos) > max_members:
            raise SerError(f"{zip_path}: lists {len(infos)} entries, more than the {max_members} allowed")
        members, skipped = _audio_members(archive, zip_path, allowed_suffixes)
        declared = sum(info.file_size for _, info in members)
        if declared > max_total_bytes:
            raise SerError(
                f"{zip_path}: would unpack to {declared} bytes, more than the {max_total_bytes} "
                "allowed (a zip bomb, or raise ingest.max_extract_bytes if the archive is genuine)"
            )
        targets = [_target(root, parts, zip_path, info.filename) for parts, info in members]
        written: list[Path] = []
        made_dirs: list[Path] = []
        budget = max_total_bytes
        try:
            for target, (_, info) in zip(targets, members, strict=True):
                made_dirs += _make_dirs(target.parent)
                budget -= _extract_member(archive, info, target, budget, zip_path)
                written.append(target)
        except BaseException:
            # Leave dest_dir as it was: no half-extracted archive for a later stage to pick up.
            for path in written:
                path.unlink(missing_ok=True)
            for folder in reversed(made_dirs):
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
    if skipped:
        _log.info("%s: skipped %d non-audio entries, e.g. %s", zip_path, len(skipped), skipped[:3])
    return targets


def _open_zip(zip_path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(zip_path)
    except FileNotFoundError:
        raise SerError(f"{zip_path}: file not found; check ingest.source") from None
    except (zipfile.BadZipFile, OSError) as err:
        raise SerError(f"{zip_path}: not a readable zip ({err}); download it again") from None


def _audio_members(
    archive: zipfile.ZipFile, zip_path: Path, allowed_suffixes: tuple[str, ...]
) -> tuple[list[tuple[tuple[str, ...], zipfile.ZipInfo]], list[str]]:
    """Check every entry; split them into audio members to use and names skipped."""
    members: list[tuple[tuple[str, ...], zipfile.ZipInfo]] = []
    skipped: list[str] = []
    seen: set[tuple[str, ...]] = set()
    for info in archive.infolist():
        parts = _safe_parts(info, zip_path)
        if info.is_dir() or not parts:
            continue
        junk = "__MACOSX" in parts or parts[-1].startswith("._")
        if junk or PurePosixPath(parts[-1]).suffix.lower() not in allowed_suffixes:
            skipped.append(info.filename)
            continue
        if info.flag_bits & 0x1:
            raise SerError(f"{zip_path}: member {info.filename!r} is encrypted; use an unencrypted zip")
        if parts in seen:
            raise SerError(f"{zip_path}: member {info.filename!r} appears twice; refusing the archive")
        seen.add(parts)
        members.append((parts, info))
    return members, skipped


def _safe_parts(info: zipfile.ZipInfo, zip_path: Path) -> tuple[str, ...]:
    """A member name's path components, or SerError when the name could escape the target."""
    name = info.filename
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise SerError(f"{zip_path}: member {name!r} is a symbolic link; refusing the archive")
    # Zips made on Windows may use backslashes; treat them as separators so "..\x" is caught.
    clean = name.replace("\\", "/")
    problem = None
    if clean.startswith("/"):
        problem = "is an absolute path"
    elif _DRIVE_RE.match(clean):
        problem = "starts with a drive letter"
    elif ".." in clean.split("/"):
        problem = "contains a '..' component"
    if problem:
        raise SerError(f"{zip_path}: member {name!r} {problem}; refusing the archive")
    return tuple(part for part in clean.split("/") if part not in ("", "."))


def _target(root: Path, parts: tuple[str, ...], zip_path: Path, name: str) -> Path:
    """Where a member goes; SerError when it resolves outside ``root`` (e.g. via a symlinked folder)."""
    target = root.joinpath(*parts)
    if not target.resolve().is_relative_to(root):
        raise SerError(f"{zip_path}: member {name!r} would be written outside {root}; refusing it")
    return target


def _make_dirs(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return those created, outermost first."""
    missing = [path for path in (folder, *folder.parents) if not path.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # e.g. a file already has the folder's name
        raise SerError(f"{folder}: could not create the folder ({err.strerror or err})") from None
    return missing[::-1]


def _extract_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int, zip_path: Path
) -> int:
    """Write one member atomically; return the bytes written."""
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with archive.open(info) as source, os.fdopen(fd, "wb") as out:
            size = copy_limited(source, out, budget, f"{zip_path}: member {info.filename!r}")
        os.replace(temp, target)
    except (zipfile.BadZipFile, EOFError, NotImplementedError, zlib.error, lzma.LZMAError) as err:
        # zipfile stops at the declared size and then fails the CRC check: a lying header ends here.
        raise SerError(
            f"{zip_path}: member {info.filename!r} is corrupt ({err}); download it again"
        ) from None
    except OSError as err:
        raise SerError(f"{target}: could not write it ({err.strerror or err}); check free space") from None
    finally:
        temp.unlink(missing_ok=True)
    return size


def copy_limited(source: BinaryIO, out: BinaryIO, budget: int, label: str) -> int:
    """Copy ``source`` to ``out``; SerError as soon as more than ``budget`` bytes arrive.

    The second zip-bomb guard: it counts bytes actually decompressed, whatever the zip declared.
    """
    copied = 0
    while chunk := source.read(_COPY_CHUNK):
        copied += len(chunk)
        if copied > budget:
            raise SerError(f"{label} unpacks to more than the remaining size budget; refusing the archive")
        out.write(chunk)
    return copied
