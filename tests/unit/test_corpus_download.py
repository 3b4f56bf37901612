"""Downloading EmoDB and TESS against a local HTTP stand-in on 127.0.0.1; the others say how to get them."""

from __future__ import annotations

import io
import socket
import threading
import urllib.parse
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from cli import app
from components.data.corpora.download import DOWNLOADS, corpus_url, fetch_corpus
from components.errors import SerError

EMODB_PATH = "/download/download.zip"
TESS_PATH = "/api/access/dataset/:persistentId/?persistentId=doi:10.5683/SP2/E8H2MF"


class _Server(ThreadingHTTPServer):
    """Serves ``files`` by path and query; records each request's path and query."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []

    @property
    def mirror(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = urllib.parse.unquote(self.path)
        self.server.requests.append(path)
        data = self.server.files.get(path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib honours *_proxy variables; a proxy must not swallow requests meant for 127.0.0.1."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


@pytest.fixture
def server() -> Iterator[_Server]:
    running = _Server()
    thread = threading.Thread(target=running.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield running
    finally:
        running.shutdown()
        running.server_close()
        thread.join()


def corpus_zip(members: dict[str, bool]) -> bytes:
    """A zip of short noise WAVs (True) and text files (False) under the given names."""
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, audio in members.items():
            if audio:
                wav = io.BytesIO()
                sf.write(wav, rng.uniform(-0.3, 0.3, 8_000), 16_000, format="WAV", subtype="PCM_16")
                archive.writestr(name, wav.getvalue())
            else:
                archive.writestr(name, "not audio\n")
    return buffer.getvalue()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_emodb_downloads_as_its_zip_with_wav_inside(server: _Server, tmp_path: Path) -> None:
    # download.zip's layout: wav/ with the clips, lablaut/ etc. with label files
    server.files[EMODB_PATH] = corpus_zip(
        {"wav/03a01Fa.wav": True, "wav/16b10Tb.wav": True, "lablaut/03a01Fa.lab": False}
    )
    fetched = fetch_corpus("emodb", tmp_path / "downloads", server.mirror, progress=False)
    assert server.requests == [EMODB_PATH]
    assert fetched.path == tmp_path / "downloads" / "emodb.zip"
    assert (fetched.n_clips, fetched.n_expected) == (2, 535)
    assert fetch_corpus("emodb", tmp_path / "downloads", server.mirror).n_clips == 2
    assert server.requests == [EMODB_PATH]  # there already: not downloaded again


def test_tess_downloads_through_the_dataverse_dataset_api(server: _Server, tmp_path: Path) -> None:
    server.files[TESS_PATH] = corpus_zip(
        {"OAF_back_angry.wav": True, "YAF_back_ps.wav": True, "MANIFEST.TXT": False}
    )
    fetched = fetch_corpus("tess", tmp_path, server.mirror, progress=False)
    assert server.requests == [TESS_PATH]  # the documented path and query reach the server
    assert fetched.n_clips == 2 and fetched.path.name == "tess.zip"


def test_the_addresses_are_the_documented_ones() -> None:
    assert corpus_url("emodb") == "http://emodb.bilderbar.info/download/download.zip"
    assert corpus_url("tess") == "https://dataverse.scholarsportal.info" + TESS_PATH
    assert corpus_url("tess", "http://127.0.0.1:9").startswith("http://127.0.0.1:9/api/access/dataset/")
    assert set(DOWNLOADS) == {"emodb", "tess"}


def test_a_page_instead_of_a_zip_is_refused_and_deleted(server: _Server, tmp_path: Path) -> None:
    server.files[EMODB_PATH] = b"<html>please log in</html>\n"
    with pytest.raises(SerError, match="sent no emodb zip") as caught:
        fetch_corpus("emodb", tmp_path, server.mirror, progress=False)
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # the next run downloads it again
    server.files[EMODB_PATH] = corpus_zip({"wav/readme.txt": False, "wav/notes.wav": True})
    with pytest.raises(SerError, match="the zip holds no emodb clips"):
        fetch_corpus("emodb", tmp_path, server.mirror, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_offline_is_one_line_saying_where_to_get_it_by_hand(tmp_path: Path) -> None:
    with pytest.raises(SerError) as caught:
        fetch_corpus("tess", tmp_path, f"http://127.0.0.1:{_closed_port()}", timeout=5, progress=False)
    message = str(caught.value)
    assert message.startswith("Could not download http://127.0.0.1:") and "refused" in message
    assert "by hand from https://doi.org/10.5683/SP2/E8H2MF and pass it as tess=PATH" in message
    assert "\n" not in message and caught.value.__suppress_context__


@pytest.mark.parametrize(
    ("corpus", "expected"),
    [
        ("cremad", "git lfs install && git clone https://github.com/CheyneyComputerScience/CREMA-D"),
        ("savee", "registration: request it at http://kahlan.eps.surrey.ac.uk/savee/"),
        ("custom-lab", "a user's own corpus"),
        ("nosuch", "unknown corpus 'nosuch'"),
    ],
)
def test_corpora_without_an_address_say_how_to_get_them(corpus: str, expected: str, tmp_path: Path) -> None:
    with pytest.raises(SerError) as caught:
        fetch_corpus(corpus, tmp_path, progress=False)
    assert expected in str(caught.value) and "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_ser_data_fetch_corpus(server: _Server, tmp_path: Path) -> None:
    server.files[EMODB_PATH] = corpus_zip({"wav/03a01Fa.wav": True})
    out = tmp_path / "downloads"
    args = ["data", "fetch", "--corpus", "emodb", "--out", str(out), "--base-url", server.mirror]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"1 emodb clips (of 535: part of it only); use it as emodb={out / 'emodb.zip'}" in result.output
    assert "licence: free for research use" in result.output
    savee = CliRunner().invoke(app, ["data", "fetch", "--corpus", "savee", "--out", str(out)])
    assert savee.exit_code == 1 and "kahlan.eps.surrey.ac.uk/savee" in str(savee.exception)
