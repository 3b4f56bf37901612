"""The feature caches joined into one table of model inputs, aligned by clip id."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from components.errors import SerError
from components.evaluation.normalize import normalize_per_speaker, normalize_sequences_per_speaker
from components.features.sets import SCALAR_SETS, SEQUENCE_SETS
from components.features.store import LABEL_TYPES, read_logmel

KEY_COLUMNS: tuple[str, ...] = ("clip_id", "content_hash", *LABEL_TYPES)


@dataclass
class Dataset:
    """Labels and features of the same clips, row ``i`` everywhere being the same clip.

    ``stats`` maps a scalar feature set (``handmade``, ``egemaps``) to ``[n, n_features]``;
    ``logmel`` is the sequence set the deep models read, ``[n, channels, n_frames]`` (log-mel,
    or another of ``SEQUENCE_SETS`` as ``load_dataset`` was asked), or None when not loaded.
    """

    labels: pd.DataFrame
    stats: dict[str, np.ndarray] = field(default_factory=dict)
    logmel: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def inputs(self, rows: np.ndarray | None, stats_sets: Sequence[str], logmel: bool) -> dict:
        """The model input dict (see ``components.models``) for some rows (None = all).

        ``stats_layout`` says which columns of ``stats`` come from which set (an ensemble
        hands each member its own); other models ignore it.
        """
        take = slice(None) if rows is None else rows
        stats = np.hstack([self.stats[name][take] for name in stats_sets]) if stats_sets else None
        if logmel and self.logmel is None:
            raise SerError("this model reads a sequence set (logmel by default): none was loaded")
        layout = tuple((name, self.stats[name].shape[1]) for name in stats_sets)
        return {"stats": stats, "logmel": self.logmel[take] if logmel else None, "stats_layout": layout}

    def subset(self, mask: np.ndarray) -> Dataset:
        """The clips where ``mask`` is true."""
        rows = np.flatnonzero(mask)
        return Dataset(
            self.labels.iloc[rows].reset_index(drop=True),
            {name: values[rows] for name, values in self.stats.items()},
            None if self.logmel is None else self.logmel[rows],
        )

    def normalized_per_speaker(self) -> Dataset:
        """A copy whose features are z-scored within each actor (uses no labels).

        Scalar sets per column; the sequence set, when loaded, per channel over each actor's
        frames that are not padding (padding frames stay all zero, keeping its dtype).
        """
        actors = self.labels["actor"].to_numpy()
        stats = {name: normalize_per_speaker(values, actors) for name, values in self.stats.items()}
        logmel = None if self.logmel is None else normalize_sequences_per_speaker(self.logmel, actors)
        return Dataset(self.labels, stats, logmel)


def load_dataset(
    features_dir: str | Path, stats_sets: Sequence[str], logmel: bool, sequence: str = "logmel"
) -> Dataset:
    """Read and align the feature tables a set of models needs.

    Args:
        features_dir: Folder of the featurize stage's Parquet tables.
        stats_sets: Scalar sets to load, e.g. ``["handmade", "egemaps"]``.
        logmel: Whether to load a sequence set (into ``Dataset.logmel``).
        sequence: Which one: a name from ``SEQUENCE_SETS`` (``logmel``, ``whisper_tiny_en_frames``).

    Returns:
        A dataset of the clips present in every requested table, sorted by clip id.

    Raises:
        SerError: A table is missing (the message says which set to add to featurize).
    """
    features_dir = Path(features_dir)
    tables: dict[str, pd.DataFrame] = {}
    for name in stats_sets:
        if name not in SCALAR_SETS:
            raise SerError(
                f"feature set {name!r} is not a table of scalar features ({', '.join(SCALAR_SETS)})"
            )
        tables[name] = _read(features_dir / f"{name}.parquet", name)
    mel_rows, mel_values = None, None
    if logmel:
        if sequence not in SEQUENCE_SETS:
            raise SerError(f"sequence {sequence!r} is not a sequence set ({', '.join(SEQUENCE_SETS)})")
        path = features_dir / f"{sequence}.parquet"
        if not path.exists():
            raise SerError(f"{path}: missing; add {sequence} to featurize.feature_sets and run featurize")
        mel_rows, mel_values = read_logmel(path)
    keys = [table["clip_id"] for table in tables.values()]
    if mel_rows is not None:
        keys.append(mel_rows["clip_id"])
    if not keys:
        raise SerError("no features requested: name a feature set for the model")
    common = sorted(set.intersection(*(set(k) for k in keys)))
    first = next(iter(tables.values())) if tables else mel_rows
    labels = first.set_index("clip_id").loc[common].reset_index()[list(KEY_COLUMNS)]
    stats = {
        name: table.set_index("clip_id").loc[common].drop(columns=list(KEY_COLUMNS[1:])).to_numpy(np.float32)
        for name, table in tables.items()
    }
    if mel_values is not None:
        position = pd.Series(np.arange(len(mel_rows)), index=mel_rows["clip_id"])
        mel_values = mel_values[position.loc[common].to_numpy()]
    return Dataset(labels, stats, mel_values)


def _read(path: Path, name: str) -> pd.DataFrame:
    if not path.exists():
        raise SerError(f"{path}: missing; add {name} to featurize.feature_sets and run featurize")
    return pd.read_parquet(path)
