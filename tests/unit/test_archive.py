"""Safe zip extraction: traversal, symlinks, zip bombs, lying sizes, and clean-up on failure."""

from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from components.data.archive import copy_limited, iter_zip_audio, safe_extract
from components.errors import SerError

CLIP = "03-01-01-01-01-01-01.wav"
RAVDESS_DIR = Path(os.environ.get("RAVDESS_DIR", Path(__file__).resolve().parents[3] / "shared" / "ravdess"))


def _wav(seed: int = 0, n_samples: int = 1600) -> bytes:
    buffer = io.BytesIO()
    signal = np.random.default_rng(seed).uniform(-0.5, 0.5, n_samples)
    sf.write(buffer, signal, 16_000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _zip(path: Path, members: dict[str | zipfile.ZipInfo, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_extracts_audio_and_skips_junk(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clips = {f"Actor_01/{CLIP}": _wav(1), "Actor_02/03-01-02-01-01-01-02.flac": b"flac bytes"}
    junk = {
        "Actor_01/": b"",  # a directory entry
        f"__MACOSX/Actor_01/._{CLIP}": b"resource fork",
        f"Actor_01/._{CLIP}": b"resource fork",
        "Actor_01/notes.txt": b"not audio",
    }
    zip_path = _zip(tmp_path / "speech.zip", {**junk, **clips})
    dest = tmp_path / "raw" / "speech"
    with caplog.at_level("INFO", logger="components.data.archive"):
        paths = safe_extract(zip_path, dest)
    assert paths == [dest.resolve() / name for name in clips]
    assert [p.read_bytes() for p in paths] == list(clips.values())
    assert _tree(dest) == ["Actor_01", f"Actor_01/{CLIP}", "Actor_02", "Actor_02/03-01-02-01-01-01-02.flac"]
    assert "skipped 3 non-audio entries" in caplog.text
    assert safe_extract(zip_path, dest) == paths  # running again overwrites in place


def test_speech_and_song_go_into_their_own_folders(tmp_path: Path) -> None:
    speech = _zip(tmp_path / "speech.zip", {f"Actor_01/{CLIP}": _wav(1)})
    song = _zip(tmp_path / "song.zip", {"Actor_01/03-02-01-01-01-01-01.wav": _wav(2)})
    safe_extract(speech, tmp_path / "raw" / "speech")
    safe_extract(song, tmp_path / "raw" / "song")
    assert _tree(tmp_path / "raw") == [
        "song",
        "song/Actor_01",
        "song/Actor_01/03-02-01-01-01-01-01.wav",
        "speech",
        "speech/Actor_01",
        f"speech/Actor_01/{CLIP}",
    ]


@pytest.mark.parametrize(
    "name",
    ["../evil.wav", "/abs/evil.wav", "Actor_01/../../evil.wav", "C:/evil.wav", "..\\evil.wav"],
)
def test_unsafe_names_refuse_the_archive(tmp_path: Path, name: str) -> None:
    # The unsafe member comes last: nothing, not even the safe first member, may be written.
    zip_path = _zip(tmp_path / "evil.zip", {f"Actor_01/{CLIP}": _wav(), name: _wav()})
    before = _tree(tmp_path)
    with pytest.raises(SerError) as caught:
        safe_extract(zip_path, tmp_path / "out")
    assert str(zip_path) in str(caught.value)
    assert repr(name) in str(caught.value)
    assert _tree(tmp_path) == before
    with pytest.raises(SerError):
        list(iter_zip_audio(zip_path))


def test_symlink_member_is_refused(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("Actor_01/link.wav")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    zip_path = _zip(tmp_path / "link.zip", {f"Actor_01/{CLIP}": _wav(), link: b"/etc/passwd"})
    before = _tree(tmp_path)
    with pytest.raises(SerError, match=r"'Actor_01/link\.wav' is a symbolic link"):
        safe_extract(zip_path, tmp_path / "out")
    assert _tree(tmp_path) == before


def test_symlinked_folder_in_dest_cannot_lead_outside(tmp_path: Path) -> None:
    outside, dest = tmp_path / "outside", tmp_path / "out"
    outside.mkdir()
    dest.mkdir()
    (dest / "Actor_01").symlink_to(outside, target_is_directory=True)
    zip_path = _zip(tmp_path / "a.zip", {f"Actor_01/{CLIP}": _wav()})
    with pytest.raises(SerError, match="outside"):
        safe_extract(zip_path, dest)
    assert list(outside.iterdir()) == []


def test_zip_bomb_is_refused_from_declared_sizes(tmp_path: Path) -> None:
    zip_path = _zip(tmp_path / "bomb.zip", {"Actor_01/zeros.wav": bytes(50_000_000)})
    assert zip_path.stat().st_size < 100_000
    before = _tree(tmp_path)
    with pytest.raises(SerError, match=r"would unpack to 50000000 bytes.*1000000 allowed"):
        safe_extract(zip_path, tmp_path / "out", max_total_bytes=1_000_000)
    assert _tree(tmp_path) == before


def test_member_lying_about_its_size_is_caught_and_cleaned_up(tmp_path: Path) -> None:
    zip_path = _zip(
        tmp_path / "liar.zip", {f"Actor_01/{CLIP}": _wav(1), "Actor_02/big.wav": bytes(2_000_000)}
    )
    # Rewrite the second member's uncompressed size to 100 bytes in its local and central headers.
    data = bytearray(zip_path.read_bytes())
    local = data.find(b"PK\x03\x04", data.find(b"Actor_02/big.wav") - 60)
    central = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, local + 22, 100)
    struct.pack_into("<I", data, central + 24, 100)
    zip_path.write_bytes(bytes(data))
    assert sum(i.file_size for i in zipfile.ZipFile(zip_path).infolist()) < 1_000_000
    before = _tree(tmp_path)
    # Python's zipfile stops at the declared 100 bytes and fails the CRC; copy_limited, tested
    # below, is the guard for a reader that would not stop.
    with pytest.raises(SerError, match=r"'Actor_02/big\.wav' is corrupt"):
        safe_extract(zip_path, tmp_path / "out", max_total_bytes=1_000_000)
    assert _tree(tmp_path) == before  # the first, good member and its folders were removed too


def test_copy_limited_stops_at_the_budget() -> None:
    out = io.BytesIO()
    with pytest.raises(SerError, match="more than the remaining size budget"):
        copy_limited(io.BytesIO(bytes(3_000_000)), out, budget=1_000_000, label="x.zip: member 'a.wav'")
    assert len(out.getvalue()) <= 1_000_000
    assert copy_limited(io.BytesIO(b"abc"), io.BytesIO(), budget=3, label="x") == 3


def test_too_many_members_and_duplicates_are_refused(tmp_path: Path) -> None:
    many = _zip(tmp_path / "many.zip", {f"Actor_01/{i}.wav": b"" for i in range(5)})
    with pytest.raises(SerError, match="5 entries, more than the 4 allowed"):
        safe_extract(many, tmp_path / "out", max_members=4)
    twice = _zip(tmp_path / "twice.zip", {f"Actor_01/{CLIP}": b"a", f"./Actor_01//{CLIP}": b"b"})
    with pytest.raises(SerError, match="appears twice"):
        safe_extract(twice, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unreadable_zip_raises_ser_error(tmp_path: Path) -> None:
    not_zip = tmp_path / "broken.zip"
    not_zip.write_bytes(b"<html>rate limited</html>")
    with pytest.raises(SerError, match=r"broken\.zip: not a readable zip"):
        safe_extract(not_zip, tmp_path / "out")
    with pytest.raises(SerError, match="file not found"):
        list(iter_zip_audio(tmp_path / "missing.zip"))


def test_iter_zip_audio_yields_readable_audio_members(tmp_path: Path) -> None:
    wav = _wav(3)
    zip_path = _zip(
        tmp_path / "a.zip",
        {"Actor_01/": b"", f"Actor_01/{CLIP}": wav, f"__MACOSX/Actor_01/._{CLIP}": b"", "README.txt": b""},
    )
    members = list(iter_zip_audio(zip_path))
    assert [name for name, _ in members] == [f"Actor_01/{CLIP}"]
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.read(members[0][1]) == wav
    assert not (tmp_path / "Actor_01").exists()


@pytest.mark.ravdess
def test_extracts_a_zip_of_real_ravdess_clips(tmp_path: Path) -> None:
    clips = sorted((RAVDESS_DIR / "speech" / "Actor_01").glob("*.wav"))[:5]
    if not clips:
        pytest.skip(f"no RAVDESS sample at {RAVDESS_DIR}")
    zip_path = _zip(tmp_path / "speech.zip", {f"Actor_01/{p.name}": p.read_bytes() for p in clips})
    paths = safe_extract(zip_path, tmp_path / "raw" / "speech")
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in clips]
    assert all(p.parent.name == "Actor_01" for p in paths)


def test_file_in_the_way_of_a_folder_raises_ser_error(tmp_path: Path) -> None:
    zip_path = _zip(tmp_path / "a.zip", {"x.wav": b"a", "x.wav/y.wav": b"b"})
    with pytest.raises(SerError, match="could not create the folder"):
        safe_extract(zip_path, tmp_path / "out")
    assert _tree(tmp_path / "out") == []


def test_zip_bomb_is_refused_before_reading_members_in_place(tmp_path: Path, monkeypatch) -> None:
    # validate and featurize read zip members whole into memory: they need the size guard too
    import components.data.archive as archive

    zip_path = _zip(tmp_path / "bomb.zip", {"Actor_01/03-01-01-01-01-01-01.wav": bytes(5_000_000)})
    monkeypatch.setattr(archive, "MAX_TOTAL_BYTES", 1_000_000)
    with pytest.raises(SerError, match=r"bomb\.zip: 1 audio members that would unpack to 5000000 bytes"):
        list(iter_zip_audio(zip_path))
