"""The RAVDESS file-name parser."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.data.ravdess import FIELDS, expected_clips, parse_name
from components.errors import SerError


def test_parses_the_documented_example():
    labels = parse_name("some/dir/03-01-06-01-02-01-12.wav")
    assert (labels.modality, labels.vocal_channel, labels.emotion) == (3, 1, 6)
    assert (labels.intensity, labels.statement, labels.repetition, labels.actor) == (1, 2, 1, 12)
    assert labels.gender == "female"
    assert labels.emotion_name == "fearful"
    assert labels.channel_name == "speech"
    assert labels.clip_id == "03-01-06-01-02-01-12"


def test_odd_actors_are_male_and_flac_is_accepted():
    assert parse_name("03-02-03-02-01-02-07.FLAC").gender == "male"


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("03-01-09-01-01-01-01.wav", "emotion"),
        ("03-01-06-03-01-01-01.wav", "intensity"),
        ("03-01-06-01-01-01-25.wav", "actor"),
        ("03-01-06-01-01-01-00.wav", "actor"),
        ("03-03-06-01-01-01-01.wav", "vocal_channel"),
        ("03-01-06-01-03-01-01.wav", "statement"),
        ("03-01-06-01-01-03-01.wav", "repetition"),
        ("03-01-6-01-01-01-01.wav", "emotion"),
        ("03-01-0a-01-01-01-01.wav", "emotion"),
        ("03-01-01-02-01-01-01.wav", "intensity"),  # neutral is never strong
        ("03-02-07-01-01-01-01.wav", "emotion"),  # song has no disgust
        ("03-02-08-01-01-01-01.wav", "emotion"),  # nor surprised
    ],
)
def test_bad_codes_name_the_file_and_the_field(name, field):
    with pytest.raises(SerError) as err:
        parse_name(name)
    assert name in str(err.value)
    assert f"'{field}'" in str(err.value)


@pytest.mark.parametrize(
    "name", ["03-01-06-01-02-01.wav", "03-01-06-01-02-01-12-01.wav", "readme.txt", "03-01-06-01-02-01-12"]
)
def test_wrong_shape_is_rejected(name):
    with pytest.raises(SerError, match=name):
        parse_name(name)


def test_every_actor_has_60_speech_and_44_song_clips():
    speech, song = expected_clips(1), expected_clips(2)
    assert (len(speech), len(song)) == (60, 44)
    assert len({c.clip_id for c in speech + song}) == 104
    assert all(c.emotion <= 6 for c in song)


valid_fields = st.tuples(
    st.just(3),
    st.sampled_from([1, 2]),
    st.integers(1, 8),
    st.sampled_from([1, 2]),
    st.sampled_from([1, 2]),
    st.sampled_from([1, 2]),
    st.integers(1, 24),
)


@given(valid_fields)
def test_parse_round_trips_every_valid_name(fields):
    name = "-".join(f"{v:02d}" for v in fields) + ".wav"
    impossible = (fields[2] == 1 and fields[3] == 2) or (fields[1] == 2 and fields[2] > 6)
    if impossible:
        with pytest.raises(SerError):
            parse_name(name)
    else:
        labels = parse_name(name)
        assert tuple(getattr(labels, f) for f in FIELDS) == fields
        assert labels.clip_id + ".wav" == name


@given(st.text(max_size=40))
def test_arbitrary_text_parses_or_raises_ser_error(text):
    # Only SerError may escape; whatever parses must be a canonical seven-field name.
    try:
        labels = parse_name(text + ".wav")
    except SerError as err:
        assert ".wav" in str(err)
    else:
        assert labels.clip_id == text
