"""Corpus adapters on small files written with each corpus's exact names and layout."""

from __future__ import annotations

import zipfile

import pandas as pd
import pytest

from components.data.corpora import CORPORA, get_corpus, parse_sources
from components.data.corpora.base import CLIP_TABLE_COLUMNS, UNKNOWN_SPEAKER, clip_table
from components.data.discover import ZIP_SEPARATOR, discover
from components.errors import SerError


def _write(root, names, write_wav):
    for name in names:
        write_wav(root / name)
    return root


def test_every_adapter_is_registered_by_its_name():
    assert sorted(CORPORA) == ["cremad", "custom", "emodb", "ravdess", "savee", "tess"]
    for name in CORPORA:
        assert get_corpus(name).name == name
    with pytest.raises(SerError, match="unknown corpus 'iemocap'"):
        get_corpus("iemocap")


def test_parse_sources_reads_name_equals_path():
    assert {k: str(v) for k, v in parse_sources(["emodb=a/b", "RAVDESS=c.zip"]).items()} == {
        "emodb": "a/b",
        "ravdess": "c.zip",
    }
    with pytest.raises(SerError, match="expected CORPUS=PATH"):
        parse_sources(["just/a/path"])
    with pytest.raises(SerError, match="named twice"):
        parse_sources(["emodb=a", "emodb=b"])


def test_emodb_names_give_speaker_gender_text_take_and_emotion(tmp_path, write_wav):
    root = _write(tmp_path / "wav", ["03a01Fa.wav", "08b10Wc.wav", "16a02Lb.wav"], write_wav)
    _write(tmp_path / "wav", ["05a01Fa.wav", "03a03Fa.wav", "03a01Xa.wav", "README.wav"], write_wav)
    scan = get_corpus("emodb").scan(tmp_path)
    clips = {c.clip_id: c for c in scan.clips}
    assert sorted(clips) == ["emodb-03a01Fa", "emodb-08b10Wc", "emodb-16a02Lb"]
    first = clips["emodb-03a01Fa"]
    assert (first.speaker, first.gender, first.native_label, dict(first.extras)) == (
        "03",
        "male",
        "F",
        {"text": "a01", "take": "a"},
    )
    assert clips["emodb-08b10Wc"].gender == "female"
    reasons = {loc.rsplit("/", 1)[-1]: why for loc, why in scan.rejected}
    assert "speaker 05 is not an EmoDB speaker" in reasons["05a01Fa.wav"]
    assert "text a03 is not an EmoDB text" in reasons["03a03Fa.wav"]
    assert "emotion code X" in reasons["03a01Xa.wav"]
    assert "not an EmoDB name" in reasons["README.wav"]
    assert root.is_dir()


def test_emodb_clip_table_holds_the_feature_caches_label_columns(tmp_path, write_wav):
    _write(tmp_path, ["03a01Fa.wav", "09a02Ta.wav"], write_wav)
    corpus = get_corpus("emodb")
    table, unreadable = clip_table(corpus, corpus.scan(tmp_path))
    assert unreadable == []
    assert tuple(table.columns) == CLIP_TABLE_COLUMNS
    assert table["actor"].tolist() == [3, 9]
    assert table["emotion"].tolist() == [
        corpus.native_labels.index("F") + 1,
        corpus.native_labels.index("T") + 1,
    ]
    assert table["content_hash"].str.len().eq(64).all()


def test_emodb_inside_a_zip(tmp_path, write_wav):
    _write(tmp_path / "src", ["10a04Nb.wav"], write_wav)
    archive = tmp_path / "emodb.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(tmp_path / "src" / "10a04Nb.wav", "emodb/wav/10a04Nb.wav")
    scan = get_corpus("emodb").scan(archive)
    assert [c.location for c in scan.clips] == [f"{archive}{ZIP_SEPARATOR}emodb/wav/10a04Nb.wav"]
    assert scan.clips[0].speaker == "10"


def test_cremad_names_and_demographics(tmp_path, write_wav):
    _write(
        tmp_path / "AudioWAV",
        [
            "1001_DFA_ANG_XX.wav",
            "1002_IEO_HAP_HI.wav",
            "1091_TIE_SAD_LO.wav",
            "1092_DFA_ANG_XX.wav",
            "1001_DFA_JOY_XX.wav",
        ],
        write_wav,
    )
    (tmp_path / "VideoDemographics.csv").write_text(
        "ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,Caucasian,Not Hispanic\n"
        "1002,21,Female,Caucasian,Not Hispanic\n"
    )
    corpus = get_corpus("cremad")
    scan = corpus.scan(tmp_path)
    clips = {c.clip_id: c for c in scan.clips}
    assert sorted(clips) == ["cremad-1001_DFA_ANG_XX", "cremad-1002_IEO_HAP_HI", "cremad-1091_TIE_SAD_LO"]
    assert clips["cremad-1001_DFA_ANG_XX"].gender == "male"
    assert clips["cremad-1002_IEO_HAP_HI"].gender == "female"
    assert clips["cremad-1002_IEO_HAP_HI"].extras == {"sentence": "IEO", "level": "HI"}
    assert clips["cremad-1091_TIE_SAD_LO"].gender == ""  # not in the demographics file: unknown, not guessed
    reasons = sorted(why for _, why in scan.rejected)
    assert any("actor 1092 is not CREMA-D's" in r for r in reasons)
    assert any("emotion JOY" in r for r in reasons)
    table, _ = clip_table(corpus, scan)
    assert table["actor"].tolist() == [1001, 1002, 1091]


def test_cremad_demographics_without_sex_column_is_a_clear_error(tmp_path, write_wav):
    _write(tmp_path, ["1001_DFA_ANG_XX.wav"], write_wav)
    (tmp_path / "VideoDemographics.csv").write_text("ActorID,Age\n1001,51\n")
    with pytest.raises(SerError, match=r"VideoDemographics\.csv: expected columns ActorID and Sex"):
        get_corpus("cremad").scan(tmp_path)


def test_tess_folders_per_speaker_and_emotion(tmp_path, write_wav):
    _write(
        tmp_path,
        [
            "OAF_angry/OAF_back_angry.wav",
            "YAF_pleasant_surprised/YAF_bath_ps.wav",
            "OAF_Fear/OAF_bean_fear.wav",
            "OAF_happy/OAF_back_sad.wav",  # the folder says happy, the name sad
            "OAF_back_bored.wav",
        ],
        write_wav,
    )
    corpus = get_corpus("tess")
    scan = corpus.scan(tmp_path)
    clips = {c.clip_id: c for c in scan.clips}
    assert sorted(clips) == ["tess-OAF_back_angry", "tess-OAF_bean_fear", "tess-YAF_bath_ps"]
    assert clips["tess-YAF_bath_ps"].native_label == "ps"
    assert {c.gender for c in scan.clips} == {"female"}
    reasons = {loc.rsplit("/", 1)[-1]: why for loc, why in scan.rejected}
    assert "folder OAF_happy does not match" in reasons["OAF_back_sad.wav"]
    assert "emotion 'bored'" in reasons["OAF_back_bored.wav"]
    table, _ = clip_table(corpus, scan)
    assert sorted(table["actor"]) == [1, 1, 2]  # OAF 1, YAF 2


def test_savee_flat_and_foldered_names(tmp_path, write_wav):
    _write(
        tmp_path,
        ["DC_a01.wav", "JE/sa03.wav", "KL/su15.wav", "JK/DC_n01.wav", "XX_a01.wav", "DC_z01.wav", "a01.wav"],
        write_wav,
    )
    scan = get_corpus("savee").scan(tmp_path)
    clips = {c.clip_id: c for c in scan.clips}
    assert sorted(clips) == ["savee-DC_a01", "savee-JE_sa03", "savee-KL_su15"]
    assert (clips["savee-JE_sa03"].speaker, clips["savee-JE_sa03"].native_label) == ("JE", "sa")
    assert clips["savee-KL_su15"].native_label == "su"
    reasons = {loc.rsplit("/", 1)[-1]: why for loc, why in scan.rejected}
    assert "folder JK does not match the speaker DC" in reasons["DC_n01.wav"]
    assert "no SAVEE speaker" in reasons["a01.wav"]
    assert "no SAVEE speaker" in reasons["XX_a01.wav"]
    assert "not a SAVEE name" in reasons["DC_z01.wav"]


def test_ravdess_adapter_is_discover_unchanged(tmp_path, write_wav):
    _write(
        tmp_path,
        [
            "Actor_01/03-01-05-02-01-01-01.wav",
            "Actor_02/03-01-05-02-01-01-03.wav",
            "Actor_02/03-02-03-01-01-01-02.wav",
        ],
        write_wav,
    )
    found = discover(tmp_path)
    scan = get_corpus("ravdess").scan(tmp_path)
    assert [c.clip_id for c in scan.clips] == [f.clip_id for f in found.files]
    assert scan.rejected == found.rejected and len(scan.rejected) == 1  # Actor_02 folder, actor 03 name
    clip = scan.clips[0]
    assert (clip.speaker, clip.native_label, clip.gender, clip.extras["vocal_channel"]) == (
        "01",
        "angry",
        "male",
        "1",
    )
    table, _ = clip_table(get_corpus("ravdess"), scan)
    assert table[["actor", "emotion", "vocal_channel", "intensity"]].values.tolist() == [
        [1, 5, 1, 2],
        [2, 3, 2, 1],
    ]


def test_custom_manifest_with_and_without_speakers(tmp_path, write_wav):
    _write(tmp_path / "clips", ["a.wav", "b.wav", "c.wav"], write_wav)
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(
        {
            "path": ["clips/a.wav", "clips/b.wav", "clips/c.wav", "clips/missing.wav"],
            "emotion": ["Happy", "sad", "", "sad"],
            "speaker": ["s1", "", "s2", "s1"],
            "gender": ["female", "", "male", ""],
        }
    ).to_csv(manifest, index=False)
    corpus = get_corpus("custom-lab")
    scan = corpus.scan(manifest)
    assert [(c.clip_id, c.native_label, c.speaker, c.gender) for c in scan.clips] == [
        ("custom-lab-clips_a", "happy", "s1", "female"),
        ("custom-lab-clips_b", "sad", "", ""),
    ]
    reasons = [why for _, why in scan.rejected]
    assert any("has no emotion" in r for r in reasons) and any("no such file" in r for r in reasons)
    table, _ = clip_table(corpus, scan)
    assert table["actor"].tolist() == [1, UNKNOWN_SPEAKER]


def test_custom_manifest_missing_columns_is_one_clear_line(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,label\na.wav,happy\n")
    with pytest.raises(SerError, match="lacks column\\(s\\) path, emotion, speaker"):
        get_corpus("custom").scan(manifest)


def test_custom_folder_per_emotion_has_unknown_speakers(tmp_path, write_wav):
    _write(tmp_path, ["happy/x.wav", "Angry/take2/y.wav", "loose.wav"], write_wav)
    corpus = get_corpus("custom")
    scan = corpus.scan(tmp_path)
    assert sorted((c.native_label, c.speaker) for c in scan.clips) == [("angry", ""), ("happy", "")]
    assert corpus.native_labels == ("angry", "happy")
    assert ["not inside an emotion folder" in why for _, why in scan.rejected] == [True]


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(SerError, match="no such folder or zip file"):
        get_corpus("emodb").scan(tmp_path / "nowhere")


def test_real_emodb_sample(emodb_dir):
    corpus = get_corpus("emodb")
    scan = corpus.scan(emodb_dir)
    assert len(scan.clips) == 243 and scan.rejected == []
    assert sorted({c.speaker for c in scan.clips}) == ["03", "08", "09", "10", "11"]
    assert set(corpus.native_labels) == {c.native_label for c in scan.clips}


# End to end: two generated corpora through `ser evaluate CORPUS=PATH ...`.

_EMOTION_VOICE = {"angry": (330.0, 0.5), "sad": (150.0, 0.08), "neutral": (220.0, 0.2)}  # pitch, level


def _voice(emotion, speaker, take):
    from tests.conftest import tone

    freq, level = _EMOTION_VOICE[emotion]
    return tone(dur=1.0, freq=freq * (1 + 0.03 * speaker), amplitude=level, seed=take)


def _emodb_and_tess(root, write_wav):
    codes = {"angry": "W", "sad": "T", "neutral": "N"}
    for s, speaker in enumerate(["03", "08", "09", "10", "11"]):
        for e, (emotion, code) in enumerate(codes.items()):
            for t, text in enumerate(["a01", "a02", "b01"]):
                write_wav(
                    root / "emodb" / f"{speaker}{text}{code}a.wav", _voice(emotion, s, 100 * s + 10 * e + t)
                )
        write_wav(root / "emodb" / f"{speaker}a01La.wav", _voice("neutral", s, 7))  # boredom: left out
    folders = {"angry": "angry", "sad": "sad", "neutral": "neutral"}
    for s, speaker in enumerate(["OAF", "YAF"]):
        for e, emotion in enumerate(folders):
            for t, word in enumerate(["back", "bar", "base", "bath"]):
                signal = _voice(emotion, s + 1, 1000 + 100 * s + 10 * e + t)
                write_wav(root / "tess" / f"{speaker}_{emotion}" / f"{speaker}_{word}_{emotion}.wav", signal)


def test_cli_cross_corpus_on_generated_corpora(tmp_path, write_wav):
    import json

    from typer.testing import CliRunner

    from cli import app
    from tests.conftest import ROOT

    _emodb_and_tess(tmp_path, write_wav)
    out = tmp_path / "out.json"
    result = CliRunner().invoke(
        app,
        [
            "evaluate", f"emodb={tmp_path / 'emodb'}", f"tess={tmp_path / 'tess'}",
            "--protocol", "cross-corpus", "--train", "emodb", "--test", "tess", "--models", "logreg",
            "--features", str(tmp_path / "features"), "--json", str(out),
            "--params", str(ROOT / "params.yaml"),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["label_set"] == "shared"
    assert report["corpora"]["emodb"]["n_clips"] == 50
    assert report["corpora"]["emodb"]["left_out_by_label"] == {"L": 5}  # counted, not relabelled
    (row,) = report["rows"]
    assert (row["split"], row["test"], row["n_test"]) == ("emodb->tess", "tess", 24)
    assert row["classes"] == "neutral,sad,angry"
    assert row["uar"] > 0.6  # chance is 1/3; the voices differ by emotion the same way in both corpora
    assert (tmp_path / "features" / "emodb" / "handmade.parquet").exists()
    assert "left out by the label map: {'L': 5}" in result.output


def test_cli_scores_emodb_on_its_native_labels_and_reads_the_label_map_from_params(tmp_path, write_wav):
    import json

    from typer.testing import CliRunner

    from cli import app
    from tests.conftest import ROOT, tone

    voices = {"W": (330.0, 0.5), "L": (120.0, 0.3), "T": (150.0, 0.08), "N": (220.0, 0.2)}  # pitch, level
    for s, speaker in enumerate(["03", "08", "09", "10", "11"]):
        for e, (code, (freq, level)) in enumerate(voices.items()):
            for t, text in enumerate(["a01", "a02", "b01"]):
                signal = tone(dur=1.0, freq=freq * (1 + 0.03 * s), amplitude=level, seed=100 * s + 10 * e + t)
                write_wav(tmp_path / "emodb" / f"{speaker}{text}{code}a.wav", signal)
    # a params file whose evaluate.label_map (relative: to the params file) merges boredom into sad
    (tmp_path / "merge.yaml").write_text(
        "labels: [neutral, sad, angry]\ncorpora:\n  emodb: {W: angry, L: sad, E: null, A: null, F: null, "
        "T: sad, N: neutral}\n"
    )
    shipped, key = (ROOT / "params.yaml").read_text(), "  label_map: data/label_map.yaml"
    assert key in shipped
    (tmp_path / "params.yaml").write_text(shipped.replace(key, "  label_map: merge.yaml"))
    out = tmp_path / "out.json"

    def evaluate(*options: str) -> dict:
        args = [
            "evaluate", f"emodb={tmp_path / 'emodb'}", "--protocol", "leave-one-speaker-out",
            "--models", "logreg", "--features", str(tmp_path / "features"), "--json", str(out), *options,
        ]  # fmt: skip
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        return json.loads(out.read_text())

    native = evaluate("--label-set", "native", "--params", str(ROOT / "params.yaml"))
    (row,) = native["rows"]
    assert native["label_set"] == "native" and row["classes"] == "anger,boredom,sadness,neutral"
    assert "left_out_by_label" not in native["corpora"]["emodb"]  # boredom is one of EmoDB's own 7
    assert (row["split"], row["n_test"]) == ("5 folds", 60)
    assert row["uar"] > 0.5  # chance is 1/4
    merged = evaluate("--params", str(tmp_path / "params.yaml"))  # shared: evaluate.label_map's
    assert merged["rows"][0]["classes"] == "neutral,sad,angry"
    assert "left_out_by_label" not in merged["corpora"]["emodb"]  # L went to sad
    shared = evaluate(
        "--params", str(tmp_path / "params.yaml"), "--label-map", str(ROOT / "data" / "label_map.yaml")
    )
    assert shared["corpora"]["emodb"]["left_out_by_label"] == {"L": 15}  # --label-map overrides params


def test_cli_speaker_protocol_on_unknown_speakers_says_so(tmp_path, write_wav):
    from typer.testing import CliRunner

    from cli import app
    from tests.conftest import ROOT

    for emotion in _EMOTION_VOICE:
        for take in range(3):
            write_wav(tmp_path / "mine" / emotion / f"{take}.wav", _voice(emotion, 0, take))
    result = CliRunner().invoke(
        app,
        [
            "evaluate", f"custom={tmp_path / 'mine'}", "--protocol", "leave-one-speaker-out",
            "--models", "logreg", "--features", str(tmp_path / "features"),
            "--params", str(ROOT / "params.yaml"),
        ],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "9 clip(s) have no speaker label" in str(result.exception)


def test_ravdess_through_the_corpus_interface_scores_as_the_pipeline(demo_features, tmp_path):
    import shutil

    from components.settings import load_settings
    from flows.evaluate import evaluate_corpora, evaluate_data
    from tests.conftest import ROOT

    settings = load_settings(ROOT / "params.yaml")
    folds = settings.evaluate.model_copy(update={"n_folds": 2, "n_val_actors": 1})  # 4 demo actors
    settings = settings.model_copy(update={"evaluate": folds})
    raw = demo_features / "data" / "raw"
    shutil.copytree(demo_features / "data" / "features", tmp_path / "plain")
    shutil.copytree(demo_features / "data" / "features", tmp_path / "corpora" / "ravdess")
    _, plain = evaluate_data(raw, tmp_path / "plain", settings, ["rf"], [("actor-kfold", "speech")])
    report = evaluate_corpora({"ravdess": raw}, tmp_path / "corpora", settings, ["rf"], "actor-kfold")
    (row,) = report["rows"]
    assert report["label_set"] == "native" and len(row["classes"].split(",")) == 8  # RAVDESS's 8 classes
    assert (row["accuracy"], row["uar"]) == (plain[0]["accuracy"], plain[0]["uar"])
    assert row["accuracy"] > 0.25  # chance 1/8: the comparison is not between two failures
