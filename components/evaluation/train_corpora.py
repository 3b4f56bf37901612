"""Which corpora the train stage trains on (``train.corpora``), and their labels in one label set.

The feature tables hold every validated clip, of every ingested corpus, with its own speaker
numbers and native label codes; the clips table says each clip's corpus. Training on RAVDESS
alone changes nothing. Training on another corpus, or on several, maps each clip's native label
onto the shared label set (``components.data.corpora.label_map``; shared code = RAVDESS code,
so every score reads the same class names), leaves out the clips whose label maps to nothing
(counted, never relabelled), and numbers the speakers so that no two corpora share one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from components.data.corpora.label_map import LabelMap, apply_label_map, load_label_map
from components.errors import SerError
from components.evaluation.dataset import Dataset

SPEAKER_OFFSET = 100  # another corpus's speaker n becomes 100 * (its place among the others) + n


@dataclass(frozen=True)
class CorpusChoice:
    """The clips the train stage keeps, relabelled, and what it left out.

    Attributes:
        labels: Indexed by clip id, the kept clips' ``corpus``, ``actor`` and ``emotion``.
        n_kept: Clips kept, per corpus.
        n_not_chosen: Clips of corpora not in ``train.corpora``, per corpus.
        n_unmapped: Clips whose label maps to nothing, per corpus and native label.
    """

    labels: pd.DataFrame
    n_kept: dict[str, int]
    n_not_chosen: dict[str, int] = field(default_factory=dict)
    n_unmapped: dict[str, dict[str, int]] = field(default_factory=dict)

    def counts(self) -> dict[str, object]:
        """The numbers of :meth:`describe`, for the stage's metrics."""
        return {"n_kept": self.n_kept, "n_not_chosen": self.n_not_chosen, "n_unmapped": self.n_unmapped}

    def describe(self) -> str:
        """One line: the clips trained on and left out, per corpus."""
        kept = ", ".join(f"{n} {corpus}" for corpus, n in self.n_kept.items())
        parts = [f"training on {sum(self.n_kept.values())} clips ({kept})"]
        if self.n_not_chosen:
            other = ", ".join(f"{n} {corpus}" for corpus, n in self.n_not_chosen.items())
            parts.append(
                f"left out {sum(self.n_not_chosen.values())} of corpora not in train.corpora ({other})"
            )
        for corpus, counts in self.n_unmapped.items():
            labels = ", ".join(f"{n} {label}" for label, n in counts.items())
            parts.append(
                f"left out {sum(counts.values())} {corpus} clips whose label maps to nothing ({labels})"
            )
        return "; ".join(parts)


def needs_label_map(clips: pd.DataFrame, corpora: Sequence[str] | None) -> bool:
    """Whether training on ``corpora`` of ``clips`` (None: all of them) maps labels: not RAVDESS alone."""
    present = set(_corpus_column(clips))
    return bool((set(corpora) if corpora is not None else present) - {"ravdess"})


def choose_corpora(
    clips: pd.DataFrame, corpora: Sequence[str] | None, label_map: LabelMap | None
) -> CorpusChoice | None:
    """The clips to train on and their labels; None when that is every clip, as they are (RAVDESS).

    Args:
        clips: The validate stage's clips table (``clip_id``, ``corpus``, ``actor``, ``emotion``,
            ``emotion_name``: the native label); a table without ``corpus`` is RAVDESS's.
        corpora: ``train.corpora``: the corpora to train on; None for every one in ``clips``.
        label_map: The shared label set; needed unless RAVDESS alone is trained on.

    Raises:
        SerError: A corpus named has no clips, or no label map for other corpora than RAVDESS.
    """
    corpus = _corpus_column(clips)
    present = sorted(set(corpus))
    chosen = present if corpora is None else list(dict.fromkeys(corpora))
    missing = [name for name in chosen if name not in present]
    if missing:
        raise SerError(
            f"train.corpora: no clips of corpus {missing[0]!r} (ingested: {', '.join(present) or 'none'})"
        )
    if chosen == ["ravdess"] and present == ["ravdess"]:
        return None
    table = clips.assign(corpus=corpus)
    kept = table[table["corpus"].isin(chosen)]
    not_chosen = table.loc[~table["corpus"].isin(chosen), "corpus"].value_counts().sort_index()
    if chosen == ["ravdess"]:  # RAVDESS alone keeps its own 8 classes
        labels = kept[["clip_id", "corpus", "actor", "emotion"]]
        unmapped: dict[str, dict[str, int]] = {}
    else:
        if label_map is None:
            raise SerError("training on other corpora than RAVDESS needs the shared label map")
        native = kept.assign(native_label=kept["emotion_name"])
        mapped, unmapped = apply_label_map(native, label_map, [c for c in chosen if c.startswith("custom")])
        others = [name for name in chosen if name != "ravdess"]
        offset = mapped["corpus"].map({name: SPEAKER_OFFSET * (i + 1) for i, name in enumerate(others)})
        known = mapped["actor"] >= 0  # an unknown speaker stays unknown (-1)
        actor = np.where(known, mapped["actor"] + offset.fillna(0).astype("int64"), mapped["actor"])
        labels = mapped.assign(actor=actor)[["clip_id", "corpus", "actor", "emotion"]]
    labels = labels.set_index("clip_id")
    return CorpusChoice(
        labels=labels,
        n_kept={name: int((labels["corpus"] == name).sum()) for name in chosen},
        n_not_chosen={str(name): int(n) for name, n in not_chosen.items()},
        n_unmapped=unmapped,
    )


def load_choice(
    clips_table: Path, corpora: Sequence[str] | None, label_map_file: Path
) -> CorpusChoice | None:
    """:func:`choose_corpora` from the files: the label map is read only when it is needed.

    Without a clips table (features built outside the pipeline) every clip is RAVDESS's.
    """
    if not Path(clips_table).is_file():
        if corpora is not None and list(corpora) != ["ravdess"]:
            raise SerError(f"{clips_table}: missing; train.corpora needs the validate stage's clips table")
        return None
    columns = ["clip_id", "actor", "emotion", "emotion_name"]
    clips = pd.read_parquet(clips_table)
    clips = clips[[*columns, "corpus"]] if "corpus" in clips.columns else clips[columns]
    label_map = load_label_map(label_map_file) if needs_label_map(clips, corpora) else None
    return choose_corpora(clips, corpora, label_map)


def apply_choice(data: Dataset, choice: CorpusChoice | None) -> Dataset:
    """``data`` reduced to the chosen clips, each with its chosen speaker number and label."""
    if choice is None:
        return data
    data = data.subset(data.labels["clip_id"].isin(choice.labels.index).to_numpy())
    return Dataset(chosen_labels(data.labels, choice), data.stats, data.logmel)


def chosen_labels(labels: pd.DataFrame, choice: CorpusChoice) -> pd.DataFrame:
    """A labels table (a ``clip_id`` column) reduced to the chosen clips, with their speaker and label."""
    labels = labels[labels["clip_id"].isin(choice.labels.index)].reset_index(drop=True)
    chosen = choice.labels.loc[labels["clip_id"]]
    return labels.assign(actor=chosen["actor"].to_numpy(), emotion=chosen["emotion"].to_numpy())


def _corpus_column(clips: pd.DataFrame) -> pd.Series:
    if "corpus" in clips.columns:
        return clips["corpus"].astype(str)
    return pd.Series("ravdess", index=clips.index)
