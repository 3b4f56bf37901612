"""``ingest.source`` as a list of named sources: typed settings, staging into folders, the record."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from components.data.corpora import CORPORA
from components.data.ingest import SOURCES_FILE, read_sources, sync_sources, write_sources
from components.errors import SerError
from components.settings import CORPUS_NAMES, Ingest, load_settings
from tests.conftest import ROOT

SHIPPED = yaml.safe_load((ROOT / "params.yaml").read_text())


def _params(tmp_path, source=None, corpora=None):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    if source is not None:
        params["ingest"]["source"] = source
    if corpora is not None:
        params["train"]["corpora"] = corpora
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_settings_know_the_corpora_the_adapters_read():
    assert tuple(CORPUS_NAMES) == tuple(CORPORA)


def test_the_plain_source_is_one_ravdess_source_as_before():
    settings = load_settings(ROOT / "params.yaml").ingest
    assert settings.source == SHIPPED["ingest"]["source"] and settings.sources == []
    assert Ingest(source="/data/ravdess.zip").sources == []


def test_named_sources_are_typed_with_their_corpus(tmp_path):
    source = [
        {"name": "ravdess", "corpus": "ravdess", "path": "demo"},
        {"name": "emodb", "corpus": "emodb", "path": "../shared/emodb"},
        {"name": "mine", "corpus": "custom-lab", "path": "recordings"},
        {"name": "more", "path": "extra.zip"},  # the corpus defaults to RAVDESS
    ]
    sources = load_settings(_params(tmp_path, source)).ingest.sources
    assert [(s.name, s.corpus, s.path) for s in sources] == [
        ("ravdess", "ravdess", "demo"),
        ("emodb", "emodb", "../shared/emodb"),
        ("mine", "custom-lab", "recordings"),
        ("more", "ravdess", "extra.zip"),
    ]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            [{"name": "x", "corpus": "iemocap", "path": "a"}],
            "ingest.source.0.corpus: unknown corpus 'iemocap' (known: ravdess, emodb, cremad, tess, savee, "
            "custom, or custom-<name>)",
        ),
        ([{"name": "x", "corpus": "emodb", "path": "demo"}], "path 'demo' is RAVDESS's, not emodb's"),
        ([{"name": "a", "path": "x"}, {"name": "a", "path": "y"}], "source name 'a' is used twice"),
        ([{"name": "../up", "path": "x"}], "source name '../up': use lower-case letters"),
        (
            [{"name": "a", "path": "x", "kind": "zip"}],
            "unknown key ingest.source.0.kind (known: name, corpus, path)",
        ),
        ([], "ingest.source: the list of sources is empty"),
    ],
)
def test_a_bad_source_is_refused_in_one_line(tmp_path, source, message):
    with pytest.raises(SerError) as caught:
        load_settings(_params(tmp_path, source))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_train_corpora_must_name_known_corpora(tmp_path):
    assert load_settings(_params(tmp_path, corpora=["emodb", "ravdess"])).train.corpora == [
        "emodb",
        "ravdess",
    ]
    with pytest.raises(SerError, match=r"train\.corpora: unknown corpus 'berlin'"):
        load_settings(_params(tmp_path, corpora=["berlin"]))


def test_the_ingest_stage_refuses_an_unknown_corpus_with_one_line(tmp_path):
    _params(tmp_path, [{"name": "x", "corpus": "iemocap", "path": "a"}])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "flows.ingest"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        "error: params.yaml: ingest.source.0.corpus: unknown corpus 'iemocap' "
        "(known: ravdess, emodb, cremad, tess, savee, custom, or custom-<name>)"
    )


def test_sources_are_synced_into_their_own_folders_and_strays_removed(tmp_path, write_wav):
    ravdess, emodb, raw = tmp_path / "ravdess", tmp_path / "emodb", tmp_path / "raw"
    write_wav(ravdess / "Actor_01" / "03-01-01-01-01-01-01.wav")
    write_wav(emodb / "03a01Fa.wav")
    write_wav(raw / "Actor_02" / "03-01-01-01-01-01-02.wav")  # an earlier single source
    write_wav(raw / "gone" / "08a01Wa.wav")  # a source since removed
    (raw / "notes.txt").write_text("kept")
    summary = sync_sources({"ravdess": ravdess, "emodb": emodb}, raw)
    assert sorted(summary.added) == ["emodb/03a01Fa.wav", "ravdess/Actor_01/03-01-01-01-01-01-01.wav"]
    assert sorted(summary.removed) == ["Actor_02/03-01-01-01-01-01-02.wav", "gone/08a01Wa.wav"]
    assert sorted(str(p.relative_to(raw)) for p in raw.rglob("*.wav")) == [
        "emodb/03a01Fa.wav",
        "ravdess/Actor_01/03-01-01-01-01-01-01.wav",
    ]
    assert (raw / "notes.txt").read_text() == "kept"
    again = sync_sources({"ravdess": ravdess, "emodb": emodb}, raw)
    assert again.n_changes == 0 and again.unchanged == 2


def test_cremad_demographics_travel_with_its_audio_from_a_folder_or_a_zip(tmp_path, write_wav):
    import zipfile

    from components.data.corpora import get_corpus
    from flows.ingest import metadata_files, source_fingerprint, stage_sources

    crema, emodb, raw = tmp_path / "crema", tmp_path / "emodb", tmp_path / "raw"
    for name in ("1001_DFA_ANG_XX.wav", "1002_IEO_HAP_HI.wav"):
        write_wav(crema / "AudioWAV" / name)
    demographics = crema / "VideoDemographics.csv"
    demographics.write_text("ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,,\n1002,21,Female,,\n")
    (crema / "notes.csv").write_text("not the corpus's: not copied")
    write_wav(emodb / "03a01Fa.wav")
    sources = [
        {"name": "crema", "corpus": "cremad", "path": str(crema)},
        {"name": "emodb", "corpus": "emodb", "path": str(emodb)},
    ]
    settings = Ingest(source=sources)
    files = metadata_files(settings)
    assert files == {"crema": ("VideoDemographics.csv",), "emodb": ()}
    summary = sync_sources({"crema": crema, "emodb": emodb}, raw, files)
    copied = raw / "crema" / "VideoDemographics.csv"
    assert "crema/VideoDemographics.csv" in summary.added and copied.read_text() == demographics.read_text()
    assert not copied.stat().st_mode & 0o222  # read-only, as the audio
    assert not (raw / "crema" / "notes.csv").exists()
    genders = {c.speaker: c.gender for c in get_corpus("cremad").scan(raw / "crema").clips}
    assert genders == {"1001": "male", "1002": "female"}  # known after ingest, as in the source

    before = source_fingerprint(settings)
    demographics.write_text("ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,,\n1002,21,Male,,\n")
    assert source_fingerprint(settings) != before  # the stage does not skip a changed file
    both = {"crema": crema, "emodb": emodb}
    assert sync_sources(both, raw, files).changed == ["crema/VideoDemographics.csv"]
    demographics.unlink()
    assert sync_sources(both, raw, files).removed == ["crema/VideoDemographics.csv"]

    archive = tmp_path / "crema.zip"  # a zip source: the file is extracted with the audio
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(crema / "AudioWAV" / "1001_DFA_ANG_XX.wav", "CREMA-D/AudioWAV/1001_DFA_ANG_XX.wav")
        zf.writestr("CREMA-D/VideoDemographics.csv", "ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,,\n")
    zipped = Ingest(source=[{"name": "crema", "corpus": "cremad", "path": str(archive)}])
    staged = stage_sources(zipped.sources, tmp_path / "staging", zipped)
    sync_sources(staged, tmp_path / "raw-zip", metadata_files(zipped))
    (clip,) = get_corpus("cremad").scan(tmp_path / "raw-zip" / "crema").clips
    assert clip.gender == "male"


def test_the_record_of_sources_round_trips_and_a_broken_one_is_named(tmp_path):
    assert read_sources(tmp_path) is None  # no record: one RAVDESS source
    write_sources(tmp_path, {"ravdess": "ravdess", "emodb": "emodb"})
    assert read_sources(tmp_path) == {"ravdess": "ravdess", "emodb": "emodb"}
    write_sources(tmp_path, None)
    assert not (tmp_path / SOURCES_FILE).exists()
    (tmp_path / SOURCES_FILE).write_text("[1, 2]")
    with pytest.raises(SerError, match=r"sources\.json: not a record of named sources"):
        read_sources(tmp_path)
