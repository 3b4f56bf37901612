"""Downloading the public corpora that have a documented download address (``ser data fetch --corpus``).

EmoDB is one zip on its own site; TESS is a Dataverse dataset, whose "download by dataset" API
(https://guides.dataverse.org/en/latest/api/dataaccess.html) sends every file as one zip. The zip
is kept as downloaded: every corpus adapter reads a zip as it reads a folder (``emodb=PATH.zip``).
Neither publishes a checksum, so the check is that the adapter finds the corpus's clips in it.
CREMA-D's audio lives in Git LFS (no single file to fetch) and SAVEE needs registration: for
those a request says in one line how to get them by hand.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from components.data.corpora import get_corpus
from components.data.fetch import download
from components.errors import SerError


@dataclass(frozen=True)
class CorpusDownload:
    """Where a corpus is downloaded from and what a complete download holds."""

    url: str
    file_name: str
    n_clips: int  # clips of the complete corpus, as its authors list them
    page: str  # where a person gets it by hand


DOWNLOADS: dict[str, CorpusDownload] = {
    "emodb": CorpusDownload(
        "http://emodb.bilderbar.info/download/download.zip", "emodb.zip", 535, "http://emodb.bilderbar.info"
    ),
    "tess": CorpusDownload(
        "https://dataverse.scholarsportal.info/api/access/dataset/:persistentId/"
        "?persistentId=doi:10.5683/SP2/E8H2MF",
        "tess.zip",
        2800,
        "https://doi.org/10.5683/SP2/E8H2MF",
    ),
}
BY_HAND: dict[str, str] = {
    "cremad": "CREMA-D has no single download (its audio is stored with Git LFS): run "
    "`git lfs install && git clone https://github.com/CheyneyComputerScience/CREMA-D` and pass its "
    "AudioWAV folder as cremad=PATH",
    "savee": "SAVEE is given out after registration: request it at http://kahlan.eps.surrey.ac.uk/savee/ "
    "and pass the unpacked folder as savee=PATH",
    "ravdess": "RAVDESS comes as two Zenodo zips: run `ser data fetch` without --corpus",
}


@dataclass(frozen=True)
class Fetched:
    """A downloaded corpus: the zip, and how many of the corpus's clips its adapter finds in it."""

    path: Path
    n_clips: int
    n_expected: int


def corpus_url(name: str, mirror: str | None = None) -> str:
    """The download address of a corpus; ``mirror`` (``http://host:port``) replaces its scheme and host.

    Raises:
        SerError: The corpus has no download address (the message says how to get it).
    """
    get_corpus(name)  # an unknown name: the usual one-line error listing the corpora
    if name not in DOWNLOADS:
        hint = BY_HAND.get(name, f"{name} is a user's own corpus: pass its folder or manifest as {name}=PATH")
        raise SerError(f"{name}: no download address. {hint}")
    url = DOWNLOADS[name].url
    if mirror is None:
        return url
    base = urllib.parse.urlsplit(mirror)
    return urllib.parse.urlsplit(url)._replace(scheme=base.scheme, netloc=base.netloc).geturl()


def fetch_corpus(
    name: str, dest_dir: Path, mirror: str | None = None, timeout: float = 30.0, progress: bool = True
) -> Fetched:
    """Download a public corpus as one zip into ``dest_dir`` (nothing is downloaded when it is there).

    Args:
        name: ``emodb`` or ``tess`` (the others say how to get them by hand).
        dest_dir: Folder for ``<name>.zip``; created when missing.
        mirror: Another ``http://host:port`` serving the same paths (tests use a local server).
        timeout: Seconds to wait for the connection and for each read.
        progress: Show a progress bar.

    Returns:
        The zip and the number of the corpus's clips its adapter reads in it: fewer than
        ``n_expected`` when the server sent part of it (Dataverse caps the size of a bundle).

    Raises:
        SerError: No download address, the download failed (offline, HTTP error, broken off:
            one line, ending with where to get it by hand), or the file holds none of the
            corpus's clips (it is deleted, so the next run downloads it again).
    """
    url = corpus_url(name, mirror)
    remote = DOWNLOADS[name]
    dest = Path(dest_dir) / remote.file_name
    try:
        download(url, dest, None, timeout=timeout, progress=progress)
    except SerError as err:
        raise SerError(
            f"{err} Or download it by hand from {remote.page} and pass it as {name}=PATH."
        ) from None
    try:
        scan = get_corpus(name).scan(dest)
    except SerError as err:  # not a zip: an error page, a login form
        dest.unlink(missing_ok=True)
        raise SerError(f"{url} sent no {name} zip ({err}); the file was deleted") from None
    if not scan.clips:
        dest.unlink(missing_ok=True)
        raise SerError(f"{url}: the zip holds no {name} clips; the file was deleted")
    return Fetched(dest, len(scan.clips), remote.n_clips)
