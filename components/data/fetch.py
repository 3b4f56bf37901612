"""Downloading the official RAVDESS audio zips from Zenodo, resumably and checksum-verified.

A download streams into ``<dest>.part``; an interrupted run leaves that file behind and the next
run asks the server for the rest with an HTTP ``Range`` request. Only a file whose MD5 matches is
renamed to ``dest``, so ``dest`` either does not exist or is complete.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from components.errors import SerError

ZENODO_RECORD = "https://zenodo.org/records/1188976"
ZENODO_BASE = f"{ZENODO_RECORD}/files"
MANUAL_HINT = (
    f"Download the zips by hand from {ZENODO_RECORD} and set ingest.source to the folder or zip path."
)
_USER_AGENT = "ravdess-ser/0.1 (+python urllib)"
_RETRY = "Check the network connection (or proxy settings) and run again."


@dataclass(frozen=True)
class RemoteFile:
    """One file of a Zenodo record: its name there, MD5 and size in bytes as Zenodo lists them."""

    name: str
    md5: str
    size: int


# The audio-only part of RAVDESS (the video zips are not used). Checksums and sizes as listed on
# the Zenodo record page; each unpacks to Actor_01/ ... Actor_24/ (song has no Actor_18 clips).
RAVDESS_AUDIO: tuple[RemoteFile, ...] = (
    RemoteFile("Audio_Speech_Actors_01-24.zip", "bc696df654c87fed845eb13823edef8a", 208_468_073),
    RemoteFile("Audio_Song_Actors_01-24.zip", "5411230427d67a21e18aa4d466e6d1b9", 225_505_317),
)


def file_url(base_url: str, name: str) -> str:
    """The download URL of ``name`` under a Zenodo-style ``base_url``."""
    return f"{base_url.rstrip('/')}/{name}?download=1"


def file_md5(path: Path, chunk_size: int = 1 << 20) -> str:
    """The hex MD5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    url: str,
    dest: Path,
    md5: str | None,
    timeout: float = 30.0,
    chunk_size: int = 1 << 20,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest``, resuming a partial download and verifying the MD5.

    Args:
        url: What to download (http or https).
        dest: Where the finished file goes; its folder is created when missing.
        md5: The expected hex MD5, or ``None`` to skip verification.
        timeout: Seconds to wait for the connection and for each read.
        chunk_size: Bytes read and written at a time.
        progress: Show a tqdm progress bar on stderr.

    Returns:
        ``dest``, complete and verified. When it already exists with the right MD5 (or exists
        and ``md5`` is ``None``) nothing is downloaded.

    Raises:
        SerError: The server cannot be reached, times out, answers with an HTTP error or stops
            early (the partial file is kept and the next call resumes), or the finished file's
            MD5 differs from ``md5`` (the partial file is deleted).
    """
    dest = Path(dest)
    if dest.is_file() and (md5 is None or file_md5(dest, chunk_size) == md5.lower()):
        return dest
    part = dest.with_suffix(dest.suffix + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Two tries: a .part the server cannot extend (416, or a 206 for another range) is dropped and
    # the download starts again from zero.
    for _ in range(2):
        if _fetch_into(url, part, timeout, chunk_size, progress):
            break
        if md5 is not None and part.is_file() and file_md5(part, chunk_size) == md5.lower():
            break  # a 416 for a .part that was complete but not yet renamed
        part.unlink(missing_ok=True)
    else:
        raise SerError(f"Could not download {url}: the server kept refusing to resume. {_RETRY}")
    if md5 is not None:
        actual = file_md5(part, chunk_size)
        if actual != md5.lower():
            part.unlink(missing_ok=True)
            raise SerError(
                f"{dest.name}: checksum mismatch after downloading {url}: expected MD5 {md5.lower()}, "
                f"got {actual}. The partial file was deleted; run again to download it afresh."
            )
    os.replace(part, dest)
    return dest


def fetch_ravdess(
    dest_dir: Path,
    base_url: str = ZENODO_BASE,
    files: tuple[RemoteFile, ...] = RAVDESS_AUDIO,
    timeout: float = 30.0,
    progress: bool = True,
) -> list[Path]:
    """Download the RAVDESS audio zips (speech and song) into ``dest_dir``.

    Args:
        dest_dir: Folder for the zips; created when missing.
        base_url: Where the files live (tests point this at a local server).
        files: Which files, with their checksums.
        timeout: Seconds to wait for the connection and for each read.
        progress: Show a progress bar per file.

    Returns:
        The zip paths, in the order of ``files``.

    Raises:
        SerError: A download failed; the message ends with how to get the zips by hand.
    """
    paths = []
    for remote in files:
        try:
            paths.append(
                download(
                    file_url(base_url, remote.name),
                    Path(dest_dir) / remote.name,
                    remote.md5,
                    timeout=timeout,
                    progress=progress,
                )
            )
        except SerError as err:
            raise SerError(f"{err} {MANUAL_HINT}") from None
    return paths


def _fetch_into(url: str, part: Path, timeout: float, chunk_size: int, progress: bool) -> bool:
    """Append the rest of ``url`` to ``part``; False when the server cannot resume from its size."""
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and offset:  # the .part is already complete or longer than the file
            return False
        raise SerError(
            f"Could not download {url}: the server answered HTTP {err.code} {err.reason}. {_RETRY}"
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise SerError(f"Could not download {url}: {_describe(err, timeout)}. {_RETRY}") from None
    with response:
        if response.status == 206:
            if not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                return False
        else:
            offset = 0  # the server ignored Range and sends the whole file: start again
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        received = offset
        with (
            open(part, "ab" if offset else "wb") as out,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name.removesuffix(".part"),
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            try:
                while chunk := response.read(chunk_size):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as err:
                raise SerError(
                    f"Could not download {url}: the transfer broke off after {received} bytes "
                    f"({_describe(err, timeout)}). Run again to resume from {part}."
                ) from None
    if total is not None and received < total:
        raise SerError(
            f"Could not download {url}: the server stopped after {received} of {total} bytes. "
            f"Run again to resume from {part}."
        )
    return True


def _describe(err: BaseException, timeout: float) -> str:
    """One line on why a request failed, without a stack trace."""
    reason = err.reason if isinstance(err, urllib.error.URLError) else err
    if isinstance(reason, socket.gaierror):
        return "the host name could not be resolved (offline, or DNS is failing)"
    if isinstance(reason, ConnectionRefusedError):
        return "the connection was refused (nothing listens at that address, or a firewall blocks it)"
    if isinstance(reason, TimeoutError):  # socket.timeout is an alias of TimeoutError
        return f"no answer within {timeout:g} s (slow or no network)"
    if isinstance(reason, ssl.SSLError):
        return f"the TLS handshake failed ({reason}); check the system clock and certificates"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason) or type(reason).__name__
