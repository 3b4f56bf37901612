"""Finding clips in folders and zips."""

import os
import zipfile

import pytest

from components.data.discover import ZIP_SEPARATOR, discover, read_bytes
from components.errors import SerError


def test_finds_speech_and_song_by_name_not_folder(tmp_path, write_wav):
    write_wav(tmp_path / "speech" / "Actor_01" / "03-01-05-02-01-01-01.wav")
    write_wav(tmp_path / "song" / "Actor_01" / "03-02-05-02-01-01-01.wav")
    write_wav(tmp_path / "loose" / "03-01-01-01-01-01-02.flac")
    (tmp_path / "notes.txt").write_text("not audio")
    found = discover(tmp_path)
    assert sorted(f.clip_id for f in found.files) == [
        "03-01-01-01-01-01-02",
        "03-01-05-02-01-01-01",
        "03-02-05-02-01-01-01",
    ]
    assert found.rejected == []


def test_rejects_bad_names_folder_mismatch_and_duplicates(tmp_path, write_wav):
    write_wav(tmp_path / "Actor_01" / "03-01-05-02-01-01-01.wav")
    write_wav(tmp_path / "copy" / "Actor_01" / "03-01-05-02-01-01-01.wav")
    write_wav(tmp_path / "Actor_02" / "03-01-05-02-01-01-03.wav")
    write_wav(tmp_path / "Actor_01" / "03-01-09-01-01-01-01.wav")
    found = discover(tmp_path)
    assert [f.clip_id for f in found.files] == ["03-01-05-02-01-01-01"]
    reasons = dict(found.rejected)
    assert "duplicate clip id" in reasons[str(tmp_path / "copy" / "Actor_01" / "03-01-05-02-01-01-01.wav")]
    assert (
        "does not match the actor field 03"
        in reasons[str(tmp_path / "Actor_02" / "03-01-05-02-01-01-03.wav")]
    )
    assert "unknown code 09" in reasons[str(tmp_path / "Actor_01" / "03-01-09-01-01-01-01.wav")]


def test_finds_clips_inside_a_zip_and_reads_them(tmp_path, write_wav):
    speech = write_wav(tmp_path / "src" / "03-01-05-02-01-01-01.wav")
    song = write_wav(tmp_path / "src" / "03-02-05-02-01-01-01.wav")
    archive = tmp_path / "ravdess.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(speech, "Actor_01/03-01-05-02-01-01-01.wav")
        zf.write(song, "Actor_01/03-02-05-02-01-01-01.wav")
    found = discover(archive)
    assert [f.location for f in found.files] == [
        f"{archive}{ZIP_SEPARATOR}Actor_01/03-01-05-02-01-01-01.wav",
        f"{archive}{ZIP_SEPARATOR}Actor_01/03-02-05-02-01-01-01.wav",
    ]
    assert read_bytes(found.files[0].location) == speech.read_bytes()


def test_symlink_loops_do_not_hang(tmp_path, write_wav):
    write_wav(tmp_path / "Actor_01" / "03-01-05-02-01-01-01.wav")
    os.symlink(tmp_path, tmp_path / "Actor_01" / "loop")
    assert len(discover(tmp_path).files) == 1


def test_missing_root_and_non_zip_file_raise(tmp_path):
    with pytest.raises(SerError, match="no such folder"):
        discover(tmp_path / "absent")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(SerError, match=r"expected a folder or a .zip"):
        discover(tmp_path / "x.txt")
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(SerError, match=r"broken.zip"):
        discover(tmp_path / "broken.zip")


def test_read_bytes_names_the_missing_file(tmp_path):
    with pytest.raises(SerError, match=r"gone.wav"):
        read_bytes(str(tmp_path / "gone.wav"))
