"""Evaluation protocols: which clips train, validate and test a model.

RAVDESS has 24 actors who each say the same two sentences twice, so a random split puts one
repetition of a recording in training and its near-identical twin in test: it measures how
well a model recognises *speakers and recordings* it has heard. The speaker-independent
protocols (``actor-kfold``, ``holdout``) keep every actor in exactly one of train, validation
and test. The ``random`` protocol is kept only to compare with the original project's numbers.

Every split holds sorted integer row *positions* (``iloc``) into the table it was made from.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from components.data.ravdess import ACTORS
from components.errors import SerError

SUBSETS: dict[str, tuple[int, ...]] = {"speech": (1,), "song": (2,), "all": (1, 2)}


@dataclass(frozen=True, eq=False)
class Split:
    """One train/validation/test partition of a labels table.

    Attributes:
        name: ``fold-1`` … ``fold-k``, ``random`` or ``holdout``.
        train: Sorted row positions of the training clips.
        val: Sorted row positions of the validation clips (may be empty).
        test: Sorted row positions of the test clips.
        test_actors: Actors whose clips are all in ``test``; empty for ``random``.
        val_actors: Actors whose clips are all in ``val``; empty for ``random``.
    """

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    test_actors: tuple[int, ...] = ()
    val_actors: tuple[int, ...] = ()


def _require_columns(labels: pd.DataFrame, columns: Iterable[str]) -> None:
    missing = [name for name in columns if name not in labels.columns]
    if missing:
        raise SerError(f"the labels table lacks column(s) {', '.join(missing)}; use the metadata table")
    if labels.empty:
        raise SerError("the labels table is empty: no clips to split")


def select_subset(labels: pd.DataFrame, subset: str) -> pd.DataFrame:
    """Keep the speech clips, the song clips, or all of them.

    Args:
        labels: A labels table with a ``vocal_channel`` column (1 speech, 2 song).
        subset: ``speech``, ``song`` or ``all``.

    Returns:
        The selected rows; the original index is kept so they can be matched to features.

    Raises:
        SerError: ``subset`` is not one of the three, or the column is missing.
    """
    if subset not in SUBSETS:
        raise SerError(f"unknown subset {subset!r}: choose one of {', '.join(SUBSETS)}")
    _require_columns(labels, ["vocal_channel"])
    return labels[labels["vocal_channel"].isin(SUBSETS[subset])]


def _require_speakers(labels: pd.DataFrame, protocol: str) -> None:
    """Refuse clips whose speaker is unknown (``actor`` below 0): they could sit on both sides."""
    unknown = int((labels["actor"].to_numpy() < 0).sum())
    if unknown:
        raise SerError(
            f"{unknown} clip(s) have no speaker label, so protocol {protocol!r} cannot keep speakers "
            "apart: give speakers (a manifest's speaker column) or use cross-corpus testing"
        )


def _positions(mask: np.ndarray) -> np.ndarray:
    return np.flatnonzero(mask).astype(np.int64)


def _actor_split(name: str, actors: np.ndarray, test: Iterable[int], val: Iterable[int]) -> Split:
    test_actors, val_actors = tuple(sorted(test)), tuple(sorted(val))
    in_test, in_val = np.isin(actors, test_actors), np.isin(actors, val_actors)
    return Split(
        name=name,
        train=_positions(~in_test & ~in_val),
        val=_positions(in_val),
        test=_positions(in_test),
        test_actors=test_actors,
        val_actors=val_actors,
    )


def _pick_val_actors(train_actors: Iterable[int], after: int, n_val_actors: int) -> tuple[int, ...]:
    """The first ``n_val_actors`` training actors after ``after`` in rotation, gender-balanced.

    Candidates are the sorted training actors, starting from the first one above ``after`` and
    wrapping round. Up to ``ceil(n/2)`` of the first candidate's gender and ``floor(n/2)`` of the
    other are taken in that order (odd ids are male); if one gender runs out, the next
    candidates of either gender fill the remaining places.
    """
    ordered = sorted(train_actors)
    start = next((i for i, actor in enumerate(ordered) if actor > after), 0)
    candidates = ordered[start:] + ordered[:start]
    if n_val_actors == 0 or not candidates:
        return ()
    first_gender = candidates[0] % 2
    quota = {first_gender: -(-n_val_actors // 2), 1 - first_gender: n_val_actors // 2}
    chosen = []
    for actor in candidates:
        if quota[actor % 2] > 0:
            chosen.append(actor)
            quota[actor % 2] -= 1
    chosen += [actor for actor in candidates if actor not in chosen][: n_val_actors - len(chosen)]
    return tuple(sorted(chosen))


def _check_n_val(n_val_actors: int, n_train_actors: int, where: str) -> None:
    if n_val_actors < 0:
        raise SerError(f"n_val_actors is {n_val_actors}; it must be 0 or more")
    if n_val_actors >= n_train_actors:
        raise SerError(
            f"{where}: {n_train_actors} actor(s) are left for training, too few to move "
            f"{n_val_actors} to validation and still train; lower n_val_actors"
        )


def random_split(
    labels: pd.DataFrame, test_share: float = 0.2, seed: int = 42, val_share: float = 0.1
) -> Split:
    """The original project's protocol: a stratified random split that leaks speakers.

    The test part is exactly the original ``train_test_split(..., test_size=0.2,
    random_state=42, stratify=emotion)``; the validation part is then drawn, stratified, from
    the training part, so it does not change the test clips.

    Args:
        labels: A labels table with an ``emotion`` column.
        test_share: Share of all clips put in test.
        seed: The random state of both draws.
        val_share: Share of *all* clips moved from training to validation (0 for none), so the
            defaults give 70/10/20.

    Returns:
        One split named ``random`` with empty actor tuples.

    Raises:
        SerError: The shares are out of range, or an emotion has too few clips to stratify.
    """
    _require_columns(labels, ["emotion"])
    if not (0 < test_share < 1 and val_share >= 0 and test_share + val_share < 1):
        raise SerError(
            f"test_share={test_share} and val_share={val_share}: need 0 < test_share, 0 <= val_share "
            "and test_share + val_share < 1"
        )
    emotion = labels["emotion"].to_numpy()
    everything = np.arange(len(labels))
    try:
        train, test = train_test_split(everything, test_size=test_share, random_state=seed, stratify=emotion)
        val = np.array([], dtype=np.int64)
        if val_share > 0:
            share_of_train = val_share / (1 - test_share)
            train, val = train_test_split(
                train, test_size=share_of_train, random_state=seed, stratify=emotion[train]
            )
    except ValueError as err:
        raise SerError(f"cannot make a stratified random split of {len(labels)} clips: {err}") from err
    train, val, test = (np.sort(part).astype(np.int64) for part in (train, val, test))
    return Split("random", train, val, test)


def actor_kfold(labels: pd.DataFrame, n_folds: int = 6, n_val_actors: int = 2) -> list[Split]:
    """Speaker-independent k-fold cross-validation by actor, the same every time.

    The sorted actor ids are cut into ``n_folds`` consecutive groups whose sizes differ by at
    most one (larger groups first): 24 actors give 1-4, 5-8, …, 21-24, each two male and two
    female (the EmoBox folds). Fold ``i`` tests on group ``i``; its validation actors are the
    first ``n_val_actors`` training actors after the test group in rotation (so the next
    group's actors), balanced by gender when possible. No actor is in two parts of a fold.

    Args:
        labels: A labels table with an ``actor`` column.
        n_folds: Number of folds, from 2 to the number of actors.
        n_val_actors: Actors per fold moved from training to validation (0 for none).

    Returns:
        ``n_folds`` splits named ``fold-1`` … ``fold-k``; every actor is in one test fold.

    Raises:
        SerError: Too few actors for ``n_folds``, or for ``n_val_actors`` plus training.
    """
    _require_columns(labels, ["actor"])
    _require_speakers(labels, "actor-kfold")
    actors = labels["actor"].to_numpy()
    present = sorted(int(a) for a in np.unique(actors))
    if n_folds < 2:
        raise SerError(f"n_folds is {n_folds}; cross-validation needs at least 2 folds")
    if n_folds > len(present):
        raise SerError(
            f"cannot cut {len(present)} actor(s) into {n_folds} folds: each fold needs at least one "
            f"test actor; lower n_folds to {len(present)} or fewer"
        )
    groups = [tuple(int(a) for a in group) for group in np.array_split(present, n_folds)]
    _check_n_val(n_val_actors, len(present) - len(groups[0]), f"{n_folds} folds of {len(present)} actors")
    splits = []
    for i, test in enumerate(groups):
        train_actors = [actor for actor in present if actor not in test]
        val = _pick_val_actors(train_actors, after=max(test), n_val_actors=n_val_actors)
        splits.append(_actor_split(f"fold-{i + 1}", actors, test, val))
    return splits


def parse_actors(spec: str) -> tuple[int, ...]:
    """Parse an actor list such as ``"13-24,3,5"``, as a ``--test-actors`` option gives it.

    Args:
        spec: Comma-separated actor ids and inclusive ranges; spaces are ignored.

    Returns:
        The actor ids, sorted and without repeats.

    Raises:
        SerError: A part is not a number or range, a range runs backwards, or an id is not a
            RAVDESS actor (1-24).
    """
    actors: set[int] = set()
    for part in (p.strip() for p in str(spec).split(",")):
        low, dash, high = part.partition("-")
        if not low.strip().isdigit() or (dash and not high.strip().isdigit()):
            raise SerError(f"actor list {spec!r}: {part!r} is not an actor id or a range like 13-24")
        first, last = int(low), int(high) if dash else int(low)
        if first > last:
            raise SerError(f"actor list {spec!r}: range {part!r} runs backwards; write {last}-{first}")
        actors.update(range(first, last + 1))
    unknown = sorted(actors - set(ACTORS))
    if unknown:
        raise SerError(f"actor list {spec!r}: {unknown} are not RAVDESS actors (1-{max(ACTORS)})")
    return tuple(sorted(actors))


def _as_actors(value: str | Iterable[int]) -> tuple[int, ...]:
    return parse_actors(value) if isinstance(value, str) else tuple(sorted({int(a) for a in value}))


def holdout_split(
    labels: pd.DataFrame,
    test_actors: str | Iterable[int],
    val_actors: str | Iterable[int] | None = None,
    n_val_actors: int = 2,
) -> Split:
    """A speaker-independent split with the test actors named, e.g. ``21-24``.

    Args:
        labels: A labels table with an ``actor`` column.
        test_actors: Actor ids, or a spec for :func:`parse_actors`.
        val_actors: Validation actor ids; if None, ``n_val_actors`` training actors are chosen
            by the rule of :func:`actor_kfold` (the next actors after the test actors).
        n_val_actors: Used only when ``val_actors`` is None.

    Returns:
        One split named ``holdout``.

    Raises:
        SerError: A named actor has no clips in the table, an actor is named for both test
            and validation, or no training actor would be left.
    """
    _require_columns(labels, ["actor"])
    _require_speakers(labels, "holdout")
    actors = labels["actor"].to_numpy()
    present = {int(a) for a in np.unique(actors)}
    test = _as_actors(test_actors)
    if not test:
        raise SerError("holdout needs at least one test actor (for example test_actors: 21-24)")
    absent = sorted(set(test) - present)
    if absent:
        raise SerError(
            f"test actor(s) {absent} have no clips in the table (actors present: {sorted(present)})"
        )
    train_actors = sorted(present - set(test))
    if val_actors is None:
        _check_n_val(n_val_actors, len(train_actors), f"holdout of actors {list(test)}")
        val = _pick_val_actors(train_actors, after=max(test), n_val_actors=n_val_actors)
    else:
        val = _as_actors(val_actors)
        if set(val) & set(test):
            raise SerError(f"actor(s) {sorted(set(val) & set(test))} are named for both test and validation")
        if sorted(set(val) - present):
            raise SerError(f"validation actor(s) {sorted(set(val) - present)} have no clips in the table")
        if not set(train_actors) - set(val):
            raise SerError("no actor is left for training: name fewer test or validation actors")
    return _actor_split("holdout", actors, test, val)


def leave_one_speaker_out(labels: pd.DataFrame, n_val_actors: int = 1) -> list[Split]:
    """One fold per speaker: :func:`actor_kfold` with as many folds as speakers (for corpora of
    a few speakers, e.g. EmoDB's 10 or SAVEE's 4).

    Raises:
        SerError: Fewer than two speakers, an unknown speaker, or too few for ``n_val_actors``.
    """
    _require_columns(labels, ["actor"])
    _require_speakers(labels, "leave-one-speaker-out")
    splits = actor_kfold(labels, n_folds=int(labels["actor"].nunique()), n_val_actors=n_val_actors)
    return [replace(split, name=f"speaker-{split.test_actors[0]:02d}") for split in splits]


def _shared_labels(labels: pd.DataFrame, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Rows whose emotion occurs in both the training and the test rows (a pair is scored on
    the labels both corpora have: a class one side never saw cannot be learnt or scored)."""
    emotion = labels["emotion"].to_numpy()
    return np.isin(emotion, np.intersect1d(emotion[train], emotion[test]))


def _corpus_split(labels: pd.DataFrame, name: str, train: np.ndarray, test: np.ndarray) -> Split:
    shared = _shared_labels(labels, train, test)
    actors = labels["actor"].to_numpy()
    return Split(
        name=name,
        train=_positions(train & shared),
        val=np.array([], dtype=np.int64),
        test=_positions(test & shared),
        test_actors=tuple(sorted(int(a) for a in np.unique(actors[test]))),
    )


def _corpora(labels: pd.DataFrame) -> list[str]:
    _require_columns(labels, ["corpus", "emotion", "actor"])
    return sorted(labels["corpus"].unique())


def cross_corpus_split(labels: pd.DataFrame, train: str, test: str) -> Split:
    """Train on every clip of corpus ``train``, test on every clip of corpus ``test``.

    Only the labels both corpora have are kept on either side (``emotion`` must hold codes of
    one shared label set: see ``components.data.corpora.label_map``). No speaker can be on both
    sides, so unknown speakers are allowed.

    Raises:
        SerError: A corpus is absent from the table, the two are the same, or they share no label.
    """
    present = _corpora(labels)
    for role, name in (("train", train), ("test", test)):
        if name not in present:
            raise SerError(
                f"cross-corpus: {role} corpus {name!r} has no clips (corpora: {', '.join(present)})"
            )
    if train == test:
        raise SerError(f"cross-corpus: train and test are both {train!r}; use a within-corpus protocol")
    corpus = labels["corpus"].to_numpy()
    split = _corpus_split(labels, f"{train}->{test}", corpus == train, corpus == test)
    if not len(split.test):
        raise SerError(f"cross-corpus: {train} and {test} have no emotion label in common")
    return split


def leave_one_corpus_out(labels: pd.DataFrame) -> list[Split]:
    """One fold per corpus: test on it, train on all the others, on the labels both sides have.

    Raises:
        SerError: Fewer than two corpora in the table.
    """
    present = _corpora(labels)
    if len(present) < 2:
        raise SerError(f"leave-one-corpus-out needs at least two corpora; the table has {present}")
    corpus = labels["corpus"].to_numpy()
    return [_corpus_split(labels, f"test-{name}", corpus != name, corpus == name) for name in present]


PROTOCOLS: dict[str, Callable[..., Split | list[Split]]] = {
    "random": random_split,
    "actor-kfold": actor_kfold,
    "holdout": holdout_split,
    "leave-one-speaker-out": leave_one_speaker_out,
    "cross-corpus": cross_corpus_split,
    "leave-one-corpus-out": leave_one_corpus_out,
}


def make_splits(labels: pd.DataFrame, protocol: str, **settings: object) -> list[Split]:
    """Make the splits of one protocol, always as a list.

    Args:
        labels: The labels table the row positions refer to.
        protocol: A key of :data:`PROTOCOLS`.
        **settings: Keyword arguments of the protocol's function (e.g. :func:`actor_kfold`,
            :func:`cross_corpus_split`).

    Raises:
        SerError: Unknown protocol or setting, or the protocol's own errors.
    """
    if protocol not in PROTOCOLS:
        raise SerError(f"unknown protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    make = PROTOCOLS[protocol]
    parameters = list(inspect.signature(make).parameters.values())[1:]
    accepted = [p.name for p in parameters]
    unknown = sorted(set(settings) - set(accepted))
    if unknown:
        raise SerError(f"protocol {protocol!r} has no setting(s) {unknown}; it takes {accepted}")
    missing = [p.name for p in parameters if p.default is p.empty and p.name not in settings]
    if missing:
        raise SerError(f"protocol {protocol!r} needs the setting(s) {missing}")
    splits = make(labels, **settings)
    return splits if isinstance(splits, list) else [splits]
