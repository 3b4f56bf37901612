"""``train.corpora``: which ingested corpora the train stage trains on, and their labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components.data.corpora import get_corpus
from components.data.corpora.label_map import load_label_map
from components.errors import SerError
from components.evaluation.dataset import Dataset
from components.evaluation.train_corpora import SPEAKER_OFFSET, apply_choice, choose_corpora, load_choice
from tests.conftest import ROOT

MAP_FILE = ROOT / "data" / "label_map.yaml"  # the shipped default of evaluate.label_map
LABEL_MAP = load_label_map(MAP_FILE)
EMODB = get_corpus("emodb")


def clips_table() -> pd.DataFrame:
    """Four RAVDESS clips (one calm) and four EmoDB clips (one boredom), speaker 03 in both."""
    ravdess = [("03-01-01-01-01-01-03", 3, 1, "neutral"), ("03-01-02-01-01-01-03", 3, 2, "calm")]
    ravdess += [("03-01-05-01-01-01-04", 4, 5, "angry"), ("03-01-03-01-01-01-04", 4, 3, "happy")]
    emodb = [(f"emodb-03a01{c}a", 3, EMODB.label_code(c), c) for c in ("W", "L")]
    emodb += [(f"emodb-08a01{c}a", 8, EMODB.label_code(c), c) for c in ("F", "N")]
    rows = [("ravdess", *row) for row in ravdess] + [("emodb", *row) for row in emodb]
    return pd.DataFrame(rows, columns=["corpus", "clip_id", "actor", "emotion", "emotion_name"])


def dataset(clips: pd.DataFrame) -> Dataset:
    """Features of the clips, row i's feature being i (so a row's identity can be checked)."""
    labels = clips[["clip_id", "actor", "emotion"]].sort_values("clip_id").reset_index(drop=True)
    values = np.arange(len(labels), dtype=np.float32)[:, None] + np.zeros((1, 3), np.float32)
    return Dataset(labels, {"handmade": values})


def test_ravdess_alone_changes_nothing():
    ravdess = clips_table().query("corpus == 'ravdess'")
    assert choose_corpora(ravdess, None, None) is None
    assert choose_corpora(ravdess, ["ravdess"], None) is None
    assert choose_corpora(ravdess.drop(columns="corpus"), None, None) is None  # an older clips table
    data = dataset(ravdess)
    assert apply_choice(data, None) is data


def test_ravdess_chosen_among_several_keeps_its_own_classes_and_counts_the_rest():
    choice = choose_corpora(clips_table(), ["ravdess"], None)
    assert choice.n_kept == {"ravdess": 4} and choice.n_not_chosen == {"emodb": 4}
    data = apply_choice(dataset(clips_table()), choice)
    assert sorted(data.labels["emotion"]) == [1, 2, 3, 5]  # calm (2) kept: RAVDESS's 8 classes
    assert "left out 4 of corpora not in train.corpora (4 emodb)" in choice.describe()


def test_several_corpora_are_mapped_to_the_shared_labels_and_their_speakers_kept_apart():
    clips = clips_table()
    choice = choose_corpora(clips, None, LABEL_MAP)
    assert choice.n_kept == {"emodb": 3, "ravdess": 3}
    assert choice.n_unmapped == {"ravdess": {"calm": 1}, "emodb": {"L": 1}}  # counted, not relabelled
    data = apply_choice(dataset(clips), choice)
    by_clip = data.labels.set_index("clip_id")
    assert by_clip.loc["emodb-03a01Wa", "emotion"] == 5  # W -> angry, RAVDESS's code of angry
    assert by_clip.loc["emodb-08a01Fa", "emotion"] == 3  # F -> happy
    assert by_clip.loc["03-01-01-01-01-01-03", "actor"] == 3  # RAVDESS speakers keep their numbers
    assert by_clip.loc["emodb-03a01Wa", "actor"] == SPEAKER_OFFSET + 3  # EmoDB 03 is not RAVDESS 03
    assert "emodb-03a01La" not in by_clip.index and "03-01-02-01-01-01-03" not in by_clip.index
    original = dataset(clips).labels["clip_id"].tolist()  # each row keeps its own features
    rows = [original.index(clip_id) for clip_id in data.labels["clip_id"]]
    assert data.stats["handmade"][:, 0].tolist() == rows


def test_one_other_corpus_alone_is_trained_on_the_shared_labels():
    choice = choose_corpora(clips_table(), ["emodb"], LABEL_MAP)
    assert choice.n_kept == {"emodb": 3} and choice.n_not_chosen == {"ravdess": 4}
    data = apply_choice(dataset(clips_table()), choice)
    assert set(data.labels["clip_id"]) == {"emodb-03a01Wa", "emodb-08a01Fa", "emodb-08a01Na"}
    assert sorted(data.labels["emotion"]) == [1, 3, 5]


def test_a_corpus_not_ingested_or_no_label_map_is_refused():
    with pytest.raises(
        SerError, match=r"train\.corpora: no clips of corpus 'tess' \(ingested: emodb, ravdess\)"
    ):
        choose_corpora(clips_table(), ["tess"], LABEL_MAP)
    with pytest.raises(SerError, match="needs the shared label map"):
        choose_corpora(clips_table(), None, None)


def test_load_choice_reads_the_clips_table_and_the_map_only_when_needed(tmp_path):
    table = tmp_path / "clips.parquet"
    clips_table().query("corpus == 'ravdess'").to_parquet(table)
    assert load_choice(table, None, tmp_path / "no_map.yaml") is None  # the map is not read
    clips_table().to_parquet(table)
    assert load_choice(table, None, MAP_FILE).n_kept == {"emodb": 3, "ravdess": 3}
    with pytest.raises(SerError, match="cannot read the label map"):
        load_choice(table, None, tmp_path / "no_map.yaml")
    assert load_choice(tmp_path / "none.parquet", None, tmp_path / "no_map.yaml") is None
    with pytest.raises(SerError, match=r"train\.corpora needs the validate stage's clips table"):
        load_choice(tmp_path / "none.parquet", ["emodb"], tmp_path / "no_map.yaml")
