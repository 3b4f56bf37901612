"""Evaluation protocols on label tables with the real RAVDESS structure (no audio)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.data.ravdess import ACTORS, ACTORS_WITHOUT_SONG, expected_clips
from components.errors import SerError
from components.evaluation.protocols import (
    actor_kfold,
    holdout_split,
    make_splits,
    parse_actors,
    random_split,
    select_subset,
)

SPEECH, SONG = expected_clips(1), expected_clips(2)
TWIN_KEY = ["actor", "emotion", "intensity", "statement", "vocal_channel"]


def make_labels(actors=ACTORS, subset: str = "all") -> pd.DataFrame:
    """Every clip RAVDESS defines for these actors (actor 18 has no song), in a shuffled order."""
    rows = []
    for actor in actors:
        clips = SPEECH if subset != "song" else []
        if subset != "speech" and actor not in ACTORS_WITHOUT_SONG:
            clips = clips + SONG
        rows += [replace(clip, actor=actor).as_dict() for clip in clips]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)


ALL_24 = make_labels()
SPEECH_12 = make_labels(range(1, 13), subset="speech")


def actors_of(labels: pd.DataFrame, positions: np.ndarray) -> set[int]:
    return set(labels["actor"].to_numpy()[positions].tolist())


def check_speaker_independent(labels: pd.DataFrame, splits) -> None:
    present = set(labels["actor"].unique().tolist())
    tested = []
    for split in splits:
        train, val, test = (actors_of(labels, p) for p in (split.train, split.val, split.test))
        assert not (train & val) and not (train & test) and not (val & test), split.name
        assert test == set(split.test_actors) and val == set(split.val_actors)
        assert set(split.val_actors) <= present - set(split.test_actors)
        assert train | val | test == present
        assert len(split.train) + len(split.val) + len(split.test) == len(labels)
        for part in (split.train, split.val, split.test):
            assert np.all(np.diff(part) > 0) and part.dtype == np.int64
        tested += list(split.test_actors)
    assert sorted(tested) == sorted(present), "every actor is tested exactly once"


def test_select_subset_keeps_the_channel_and_the_index():
    assert len(select_subset(ALL_24, "speech")) == 24 * 60
    song = select_subset(ALL_24, "song")
    assert len(song) == 23 * 44 and set(song["vocal_channel"]) == {2}
    assert song.index.isin(ALL_24.index[ALL_24["vocal_channel"] == 2]).all()
    assert len(select_subset(ALL_24, "all")) == 24 * 104 - 44
    with pytest.raises(SerError, match="speech, song, all"):
        select_subset(ALL_24, "singing")


def test_24_actors_make_the_emobox_folds():
    splits = actor_kfold(ALL_24)
    assert [s.name for s in splits] == [f"fold-{i}" for i in range(1, 7)]
    assert [s.test_actors for s in splits] == [tuple(range(a, a + 4)) for a in range(1, 25, 4)]
    for split in splits:
        assert sorted(a % 2 for a in split.test_actors) == [0, 0, 1, 1], "2 male + 2 female"
        assert len(split.val_actors) == 2 and sorted(a % 2 for a in split.val_actors) == [0, 1]
    assert splits[0].val_actors == (5, 6) and splits[-1].val_actors == (1, 2)
    check_speaker_independent(ALL_24, splits)


def test_12_actors_make_six_folds_of_two():
    splits = actor_kfold(SPEECH_12)
    assert [s.test_actors for s in splits] == [(a, a + 1) for a in range(1, 13, 2)]
    check_speaker_independent(SPEECH_12, splits)


def test_uneven_actor_counts_give_folds_within_one_of_each_other():
    labels = make_labels(range(1, 11), subset="speech")
    sizes = [len(s.test_actors) for s in actor_kfold(labels, n_folds=4)]
    assert sizes == [3, 3, 2, 2]


def test_actor_kfold_is_deterministic():
    first, second = actor_kfold(ALL_24), actor_kfold(ALL_24)
    for a, b in zip(first, second, strict=True):
        assert a.test_actors == b.test_actors and a.val_actors == b.val_actors
        for part in ("train", "val", "test"):
            np.testing.assert_array_equal(getattr(a, part), getattr(b, part))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_actor_kfold_never_shares_an_actor(data):
    actors = data.draw(st.sets(st.sampled_from(ACTORS), min_size=2, max_size=24))
    n_folds = data.draw(st.integers(2, len(actors)), label="n_folds")
    smallest_train = len(actors) - -(-len(actors) // n_folds)
    n_val = data.draw(st.integers(0, smallest_train - 1), label="n_val_actors")
    labels = pd.DataFrame({"actor": sorted(actors) * 3, "emotion": 1})
    splits = actor_kfold(labels, n_folds=n_folds, n_val_actors=n_val)
    assert len(splits) == n_folds
    sizes = [len(s.test_actors) for s in splits]
    assert max(sizes) - min(sizes) <= 1
    assert all(len(s.val_actors) == n_val for s in splits)
    check_speaker_independent(labels, splits)


def test_actor_kfold_rejects_impossible_settings():
    with pytest.raises(SerError, match="cannot cut 12 actor"):
        actor_kfold(SPEECH_12, n_folds=13)
    with pytest.raises(SerError, match="n_val_actors"):
        actor_kfold(SPEECH_12, n_folds=2, n_val_actors=6)
    with pytest.raises(SerError, match="at least 2 folds"):
        actor_kfold(SPEECH_12, n_folds=1)


def test_random_split_is_stratified_and_reproducible():
    split = random_split(ALL_24)
    n = len(ALL_24)
    assert split.name == "random" and split.test_actors == () and split.val_actors == ()
    assert len(split.test) == pytest.approx(0.2 * n, abs=1)
    assert len(split.val) == pytest.approx(0.1 * n, abs=2)
    assert sorted(np.concatenate([split.train, split.val, split.test]).tolist()) == list(range(n))
    overall = ALL_24["emotion"].value_counts(normalize=True)
    for part in (split.train, split.val, split.test):
        shares = ALL_24["emotion"].iloc[part].value_counts(normalize=True)
        assert (shares - overall).abs().max() < 0.01
    again = random_split(ALL_24)
    np.testing.assert_array_equal(split.test, again.test)
    np.testing.assert_array_equal(split.val, again.val)


def test_random_test_part_is_the_original_projects_split():
    from sklearn.model_selection import train_test_split

    _, original_test = train_test_split(
        np.arange(len(SPEECH_12)), test_size=0.2, random_state=42, stratify=SPEECH_12["emotion"]
    )
    for val_share in (0.0, 0.1):
        split = random_split(SPEECH_12, val_share=val_share)
        np.testing.assert_array_equal(split.test, np.sort(original_test))
    assert len(random_split(SPEECH_12, val_share=0.0).val) == 0


def test_random_split_leaks_the_twin_repetition_into_training():
    split = random_split(ALL_24)
    train_keys = set(map(tuple, ALL_24[TWIN_KEY].iloc[split.train].to_numpy().tolist()))
    test_keys = ALL_24[TWIN_KEY].iloc[split.test].to_numpy().tolist()
    twin_in_train = np.mean([tuple(key) in train_keys for key in test_keys])
    assert twin_in_train > 0.5  # why the README leads with the speaker-independent protocols
    assert actors_of(ALL_24, split.test) <= actors_of(ALL_24, split.train)


def test_random_split_rejects_bad_shares():
    with pytest.raises(SerError, match="test_share"):
        random_split(ALL_24, test_share=0.8, val_share=0.3)


def test_holdout_with_named_actors():
    split = holdout_split(ALL_24, "21-24")
    assert split.name == "holdout" and split.test_actors == (21, 22, 23, 24)
    assert split.val_actors == (1, 2)
    check_speaker_independent(ALL_24, [split, holdout_split(ALL_24, range(1, 21), val_actors=[])])
    explicit = holdout_split(ALL_24, [3, 4], val_actors="7,8")
    assert (explicit.test_actors, explicit.val_actors) == ((3, 4), (7, 8))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"test_actors": "13-14"}, r"\[13, 14\] have no clips"),
        ({"test_actors": [1], "val_actors": [1, 2]}, "both test and validation"),
        ({"test_actors": [1], "val_actors": [20]}, r"\[20\] have no clips"),
        ({"test_actors": range(1, 11), "val_actors": [11, 12]}, "no actor is left"),
        ({"test_actors": []}, "at least one test actor"),
    ],
)
def test_holdout_rejects_bad_actors(kwargs, message):
    with pytest.raises(SerError, match=message):
        holdout_split(SPEECH_12, **kwargs)


def test_make_splits_dispatches_and_checks_names():
    assert len(make_splits(SPEECH_12, "actor-kfold", n_folds=3)) == 3
    assert [s.name for s in make_splits(SPEECH_12, "random", seed=42)] == ["random"]
    assert make_splits(SPEECH_12, "holdout", test_actors="11-12")[0].test_actors == (11, 12)
    with pytest.raises(SerError, match="random, actor-kfold, holdout"):
        make_splits(SPEECH_12, "loso")
    with pytest.raises(SerError, match="n_fold"):
        make_splits(SPEECH_12, "actor-kfold", n_fold=3)
    with pytest.raises(SerError, match="test_actors"):
        make_splits(SPEECH_12, "holdout")


def test_parse_actors():
    assert parse_actors("13-24,3,5") == (3, 5, *range(13, 25))
    assert parse_actors(" 2 , 1,2") == (1, 2)
    for bad in ("", "a", "3-", "24-13", "0", "1-25"):
        with pytest.raises(SerError, match="actor list"):
            parse_actors(bad)


def test_missing_columns_are_named():
    with pytest.raises(SerError, match="actor"):
        actor_kfold(pd.DataFrame({"emotion": [1, 2]}))
