"""The label map (data/label_map.yaml) and the cross-corpus protocols that score on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.data.corpora import CORPORA, get_corpus
from components.data.corpora.label_map import apply_label_map, load_label_map, parse_label_map
from components.data.ravdess import EMOTIONS
from components.errors import SerError
from components.evaluation.cross_corpus import combine
from components.evaluation.dataset import Dataset
from components.evaluation.protocols import make_splits
from components.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def label_map():
    return load_label_map(ROOT / load_settings(ROOT / "params.yaml").evaluate.label_map)


def test_the_project_map_covers_every_native_label_of_every_fixed_corpus(label_map):
    for name in CORPORA:
        corpus = get_corpus(name)
        if name == "custom":
            continue
        assert set(label_map.corpora[name]) == set(corpus.native_labels), name


def test_documented_defaults(label_map):
    assert label_map.corpora["ravdess"]["calm"] is None  # calm is not merged into neutral
    assert label_map.corpora["emodb"]["L"] is None  # boredom has no counterpart
    assert label_map.corpora["tess"]["ps"] == "surprised"
    assert label_map.corpora["savee"]["su"] == "surprised"
    assert label_map.corpora["emodb"]["W"] == "angry"
    assert all(label_map.code(label) in EMOTIONS for label in label_map.labels)


def test_unmapped_clips_are_left_out_and_counted_never_relabelled(label_map):
    table = pd.DataFrame(
        {
            "corpus": ["emodb", "emodb", "emodb", "ravdess", "ravdess"],
            "native_label": ["W", "L", "L", "calm", "happy"],
        },
        index=[10, 11, 12, 13, 14],
    )
    mapped, left_out = apply_label_map(table, label_map)
    assert mapped.index.tolist() == [10, 14]
    assert mapped["label"].tolist() == ["angry", "happy"]
    assert mapped["emotion"].tolist() == [5, 3]  # RAVDESS codes of the shared labels
    assert left_out == {"emodb": {"L": 2}, "ravdess": {"calm": 1}}


def test_a_native_label_missing_from_the_map_is_an_error_not_a_guess(label_map):
    table = pd.DataFrame({"corpus": ["emodb"], "native_label": ["Q"]})
    with pytest.raises(SerError, match="corpus 'emodb' has no entry for its label 'Q'"):
        apply_label_map(table, label_map)
    with pytest.raises(SerError, match="no entry for corpus 'iemocap'"):
        apply_label_map(pd.DataFrame({"corpus": ["iemocap"], "native_label": ["ang"]}), label_map)


def test_open_label_sets_map_shared_names_to_themselves_and_others_to_nothing(label_map):
    table = pd.DataFrame({"corpus": ["custom", "custom"], "native_label": ["happy", "joy"]})
    mapped, left_out = apply_label_map(table, label_map, open_sets=["custom"])
    assert mapped["label"].tolist() == ["happy"]
    assert left_out == {"custom": {"joy": 1}}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"labels": ["neutral"]}, "exactly the keys 'labels' and 'corpora'"),
        ({"labels": ["bored"], "corpora": {}}, "shared label\\(s\\) \\['bored'\\] are not emotion names"),
        ({"labels": ["happy"], "corpora": {"emodb": {"F": "joy"}}}, "corpora.emodb.F maps to 'joy'"),
        ({"labels": ["happy"], "corpora": {"emodb": ["F"]}}, "corpora.emodb must map"),
    ],
)
def test_bad_maps_are_refused_with_one_line(raw, message):
    with pytest.raises(SerError, match=message):
        parse_label_map(raw, "map.yaml")


def test_unreadable_map_file(tmp_path):
    with pytest.raises(SerError, match="cannot read the label map"):
        load_label_map(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("labels: [neutral\n")
    with pytest.raises(SerError, match="not valid YAML"):
        load_label_map(bad)


# Combining corpora and the protocols over them.


def _corpus(name, speakers, labels, n_features=3, offset=0.0):
    rows = [(s, lab) for s in speakers for lab in labels for _ in range(2)]
    clip_ids = [f"{name}-{i:03d}" for i in range(len(rows))]
    table = pd.DataFrame(
        {
            "clip_id": clip_ids,
            "corpus": name,
            "speaker": [s for s, _ in rows],
            "native_label": [lab for _, lab in rows],
        }
    )
    actor = [int(s) if s.isdigit() else -1 for s, _ in rows]
    feats = pd.DataFrame(
        {"clip_id": clip_ids, "actor": actor, "emotion": 0, "gender": "", "vocal_channel": 1}
    )
    values = np.random.default_rng(len(name)).normal(offset, 1.0, (len(rows), n_features)).astype(np.float32)
    return Dataset(feats, {"handmade": values}), table


def test_combine_numbers_speakers_apart_and_counts_left_out_labels(label_map):
    emodb, emodb_table = _corpus("emodb", ["03", "08"], ["W", "N", "L"])
    ravdess, ravdess_table = _corpus("ravdess", ["03", "04"], ["angry", "neutral", "calm", "surprised"])
    data, left_out = combine(
        {"emodb": emodb, "ravdess": ravdess}, {"emodb": emodb_table, "ravdess": ravdess_table}, label_map
    )
    assert left_out == {"emodb": {"L": 4}, "ravdess": {"calm": 4}}
    assert len(data) == len(data.stats["handmade"]) == 8 + 12
    by_corpus = data.labels.groupby("corpus")["actor"].unique()
    assert set(by_corpus["emodb"]).isdisjoint(
        set(by_corpus["ravdess"])
    )  # speaker 03 of each is not one voice


def test_native_labels_are_one_corpus_own_named_in_english(label_map):
    emodb, table = _corpus("emodb", ["03"], ["W", "L", "N"])
    emodb.labels["emotion"] = [get_corpus("emodb").label_code(native) for native in table["native_label"]]
    data, left_out = combine({"emodb": emodb}, {"emodb": table}, None)
    assert left_out == {}  # boredom kept: the native set is all 7
    assert dict(zip(data.labels["emotion"], data.labels["label"], strict=True)) == {
        1: "anger",
        2: "boredom",
        7: "neutral",
    }
    ravdess, ravdess_table = _corpus("ravdess", ["03"], ["angry"])
    with pytest.raises(SerError, match="native labels are one corpus's own: emodb, ravdess"):
        combine({"emodb": emodb, "ravdess": ravdess}, {"emodb": table, "ravdess": ravdess_table}, None)


def test_corpus_normalisation_centres_each_corpus_without_labels(label_map):
    emodb, emodb_table = _corpus("emodb", ["03", "08"], ["W", "N"], offset=5.0)
    tess, tess_table = _corpus("tess", ["OAF", "YAF"], ["angry", "neutral"], offset=-5.0)
    tess.labels["actor"] = [1 if s == "OAF" else 2 for s in tess_table["speaker"]]
    data, _ = combine(
        {"emodb": emodb, "tess": tess}, {"emodb": emodb_table, "tess": tess_table}, label_map, "corpus"
    )
    for name in ("emodb", "tess"):
        rows = data.labels["corpus"].to_numpy() == name
        assert np.allclose(data.stats["handmade"][rows].mean(axis=0), 0.0, atol=1e-5)


def _labels(corpus, actor, emotion):
    return pd.DataFrame({"corpus": corpus, "actor": actor, "emotion": emotion})


def test_cross_corpus_split_keeps_only_the_labels_both_corpora_have():
    labels = _labels(
        ["ravdess"] * 4 + ["emodb"] * 3, [1, 1, 2, 2, 13, 13, 14], [5, 8, 1, 5, 5, 1, 1]
    )  # surprised (8) only in ravdess
    (split,) = make_splits(labels, "cross-corpus", train="ravdess", test="emodb")
    assert split.name == "ravdess->emodb"
    assert split.train.tolist() == [0, 2, 3]  # the surprised clip is not trained on
    assert split.test.tolist() == [4, 5, 6]
    with pytest.raises(SerError, match="test corpus 'tess' has no clips"):
        make_splits(labels, "cross-corpus", train="ravdess", test="tess")
    with pytest.raises(SerError, match="train and test are both"):
        make_splits(labels, "cross-corpus", train="emodb", test="emodb")


def test_leave_one_corpus_out_tests_each_corpus_once():
    labels = _labels(["a", "a", "b", "b", "c", "c"], [1, 2, 3, 4, 5, 6], [1, 5, 1, 5, 1, 4])
    splits = make_splits(labels, "leave-one-corpus-out")
    assert [s.name for s in splits] == ["test-a", "test-b", "test-c"]
    assert splits[2].test.tolist() == [4]  # c's sad clip: no other corpus has sad
    assert splits[2].train.tolist() == [0, 2]
    with pytest.raises(SerError, match="at least two corpora"):
        make_splits(labels.iloc[:2], "leave-one-corpus-out")


def test_leave_one_speaker_out_has_one_fold_per_speaker():
    labels = _labels(["emodb"] * 10, [3, 3, 8, 8, 9, 9, 10, 10, 11, 11], [1, 5] * 5)
    splits = make_splits(labels, "leave-one-speaker-out", n_val_actors=1)
    assert [s.test_actors for s in splits] == [(3,), (8,), (9,), (10,), (11,)]
    assert [s.name for s in splits] == ["speaker-03", "speaker-08", "speaker-09", "speaker-10", "speaker-11"]
    for split in splits:
        assert len(split.val_actors) == 1 and not set(split.val_actors) & set(split.test_actors)


@pytest.mark.parametrize("protocol", ["leave-one-speaker-out", "actor-kfold"])
def test_speaker_protocols_refuse_unknown_speakers_instead_of_leaking(protocol):
    labels = _labels(["custom"] * 4, [1, 2, -1, -1], [1, 5, 1, 5])
    with pytest.raises(SerError, match="2 clip\\(s\\) have no speaker label"):
        make_splits(labels, protocol)


def test_joint_folds_hold_out_a_slice_of_every_corpus():
    from components.evaluation.cross_corpus import joint_speaker_folds

    labels = _labels(["a"] * 4 + ["b"] * 2, [1, 2, 3, 4, 5, 6], [1, 5, 1, 5, 1, 5])
    splits = joint_speaker_folds(labels, 2)
    assert [s.test_actors for s in splits] == [(1, 2, 5), (3, 4, 6)]
    for split in splits:
        assert not set(split.train) & set(split.test) and len(split.train) + len(split.test) == 6
    with pytest.raises(SerError, match="b has 2 speaker\\(s\\), fewer than 3 folds"):
        joint_speaker_folds(labels, 3)


def test_a_class_too_rare_to_train_on_is_left_out_of_training_but_still_scored():
    from components.evaluation.cross_corpus import score
    from components.evaluation.evaluate import ModelSpec

    rng = np.random.default_rng(0)
    emotion = np.array([1] * 20 + [5] * 20 + [4] * 3 + [1] * 5 + [5] * 5 + [4] * 2)
    corpus = ["a"] * 43 + ["b"] * 12
    features = rng.normal(size=(55, 4)).astype(np.float32) + emotion[:, None]
    labels = pd.DataFrame({"corpus": corpus, "actor": [1] * 43 + [2] * 12, "emotion": emotion})
    data = Dataset(labels, {"handmade": features})
    spec = ModelSpec.from_params("lr", {"kind": "logreg", "features": ["handmade"]})
    (split,) = make_splits(labels, "cross-corpus", train="a", test="b")
    result = score(spec, data, [split], min_class_clips=5)
    (fold,) = result["folds"]
    assert fold["untrained"] == ["sad"]  # 3 training clips of sad (code 4)
    assert fold["n_test"] == 12 and fold["metrics"]["per_class"]["sad"]["support"] == 2
    assert fold["metrics"]["per_class"]["sad"]["recall"] == 0.0  # counted as misses, not dropped
