"""Downloads against a local HTTP server on 127.0.0.1: resume, checksums, and offline errors."""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import urllib.error
import urllib.parse
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from components.data.fetch import MANUAL_HINT, RemoteFile, download, fetch_ravdess, file_url
from components.errors import SerError

NAME = "Audio_Speech_Actors_01-24.zip"


class _Server(ThreadingHTTPServer):
    """Serves ``files`` by name; records each request's path and Range header."""

    daemon_threads = True

    def __init__(self, honour_range: bool) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.honour_range = honour_range
        self.truncate_next = False  # send only half of the next body, then hang up
        self.requests: list[tuple[str, str | None]] = []

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_port}/{name}?download=1"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        name = urllib.parse.urlsplit(self.path).path.lstrip("/")
        byte_range = self.headers.get("Range")
        self.server.requests.append((name, byte_range))
        data = self.server.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if byte_range and self.server.honour_range:
            start = int(byte_range.removeprefix("bytes=").removesuffix("-"))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.truncate_next:
            self.server.truncate_next = False
            body = body[: len(body) // 2]
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(honour_range: bool) -> Iterator[_Server]:
    server = _Server(honour_range)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib honours *_proxy variables; a proxy must not swallow requests meant for 127.0.0.1."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


@pytest.fixture
def payload() -> bytes:
    """A small zip of two noise WAVs (about 64 kB, barely compressible)."""
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for actor in (1, 2):
            wav = io.BytesIO()
            sf.write(wav, rng.uniform(-0.5, 0.5, 16_000), 16_000, format="WAV", subtype="PCM_16")
            archive.writestr(f"Actor_{actor:02d}/03-01-01-01-01-01-{actor:02d}.wav", wav.getvalue())
    return buffer.getvalue()


@pytest.fixture
def server(payload: bytes) -> Iterator[_Server]:
    for running in _serve(honour_range=True):
        running.files[NAME] = payload
        yield running


@pytest.fixture
def server_ignoring_range(payload: bytes) -> Iterator[_Server]:
    for running in _serve(honour_range=False):
        running.files[NAME] = payload
        yield running


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_full_download_verifies_md5(server: _Server, payload: bytes, tmp_path: Path) -> None:
    dest = tmp_path / "raw" / NAME
    result = download(server.url(NAME), dest, _md5(payload), chunk_size=4096, progress=True)
    assert result == dest
    assert dest.read_bytes() == payload
    assert server.requests == [(NAME, None)]
    assert sorted(p.name for p in dest.parent.iterdir()) == [NAME]  # no .part left


def test_resumes_partial_download_with_range(server: _Server, payload: bytes, tmp_path: Path) -> None:
    dest = tmp_path / NAME
    offset = len(payload) // 3
    dest.with_suffix(".zip.part").write_bytes(payload[:offset])
    download(server.url(NAME), dest, _md5(payload), chunk_size=4096, progress=False)
    assert server.requests == [(NAME, f"bytes={offset}-")]
    assert dest.read_bytes() == payload
    assert not dest.with_suffix(".zip.part").exists()


def test_server_ignoring_range_restarts_from_zero(
    server_ignoring_range: _Server, payload: bytes, tmp_path: Path
) -> None:
    dest = tmp_path / NAME
    dest.with_suffix(".zip.part").write_bytes(b"x" * 1000)  # not even a prefix of the file
    download(server_ignoring_range.url(NAME), dest, _md5(payload), progress=False)
    assert server_ignoring_range.requests == [(NAME, "bytes=1000-")]
    assert dest.read_bytes() == payload


def test_broken_transfer_keeps_part_and_next_call_resumes(
    server: _Server, payload: bytes, tmp_path: Path
) -> None:
    dest = tmp_path / NAME
    server.truncate_next = True
    with pytest.raises(SerError, match=r"stopped after \d+ of \d+ bytes.*resume"):
        download(server.url(NAME), dest, _md5(payload), chunk_size=4096, progress=False)
    part = dest.with_suffix(".zip.part")
    assert 0 < part.stat().st_size < len(payload)
    assert not dest.exists()
    download(server.url(NAME), dest, _md5(payload), chunk_size=4096, progress=False)
    assert server.requests[-1] == (NAME, f"bytes={len(payload) // 2}-")
    assert dest.read_bytes() == payload


def test_complete_part_answered_416_is_used(server: _Server, payload: bytes, tmp_path: Path) -> None:
    dest = tmp_path / NAME
    dest.with_suffix(".zip.part").write_bytes(payload)  # finished but never renamed
    download(server.url(NAME), dest, _md5(payload), progress=False)
    assert server.requests == [(NAME, f"bytes={len(payload)}-")]
    assert dest.read_bytes() == payload


def test_existing_verified_file_is_not_downloaded(server: _Server, payload: bytes, tmp_path: Path) -> None:
    dest = tmp_path / NAME
    dest.write_bytes(payload)
    download(server.url(NAME), dest, _md5(payload), progress=False)
    assert server.requests == []


def test_existing_corrupt_file_is_replaced(server: _Server, payload: bytes, tmp_path: Path) -> None:
    dest = tmp_path / NAME
    dest.write_bytes(payload[:-10])
    download(server.url(NAME), dest, _md5(payload), progress=False)
    assert dest.read_bytes() == payload


def test_wrong_checksum_raises_and_leaves_nothing(server: _Server, payload: bytes, tmp_path: Path) -> None:
    dest = tmp_path / NAME
    with pytest.raises(SerError) as caught:
        download(server.url(NAME), dest, "0" * 32, progress=False)
    message = str(caught.value)
    assert "checksum" in message and "MD5" in message
    assert NAME in message and "0" * 32 in message and _md5(payload) in message
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_raises_ser_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/{NAME}"
    with pytest.raises(SerError) as caught:
        download(url, tmp_path / NAME, None, timeout=5, progress=False)
    assert not isinstance(caught.value, urllib.error.URLError)
    assert caught.value.__suppress_context__  # printed without the urllib traceback
    message = str(caught.value)
    assert url in message and "refused" in message and "run again" in message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_silent_server_times_out(tmp_path: Path) -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/{NAME}"
        with pytest.raises(SerError, match=r"no answer within 0\.3 s"):
            download(url, tmp_path / NAME, None, timeout=0.3, progress=False)


def test_http_404_raises_ser_error(server: _Server, tmp_path: Path) -> None:
    url = server.url("missing.zip")
    with pytest.raises(SerError, match="HTTP 404") as caught:
        download(url, tmp_path / "missing.zip", None, progress=False)
    assert url in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_fetch_ravdess_downloads_every_file(server: _Server, tmp_path: Path) -> None:
    server.files.update({"speech.zip": b"speech bytes", "song.zip": b"song bytes"})
    files = (
        RemoteFile("speech.zip", _md5(b"speech bytes"), 12),
        RemoteFile("song.zip", _md5(b"song bytes"), 10),
    )
    base_url = f"http://127.0.0.1:{server.server_port}/"
    paths = fetch_ravdess(tmp_path, base_url=base_url, files=files, progress=False)
    assert paths == [tmp_path / "speech.zip", tmp_path / "song.zip"]
    assert paths[1].read_bytes() == b"song bytes"
    assert file_url(base_url, "song.zip").endswith("/song.zip?download=1")


def test_fetch_ravdess_failure_says_how_to_get_the_zips(tmp_path: Path) -> None:
    base_url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(SerError) as caught:
        fetch_ravdess(tmp_path, base_url=base_url, progress=False)
    assert MANUAL_HINT in str(caught.value)
    assert "https://zenodo.org/records/1188976" in str(caught.value)
