"""The Parquet layout of feature tables: schema, row encoding, reuse of old rows, decoding.

Every table has one row per clip, sorted by ``clip_id``: the keys ``clip_id`` and
``content_hash``, the label columns (so trainers need no join), then the features:

- ``handmade``, ``egemaps``: one float32 column per feature, named by the set.
- ``logmel``: column ``logmel``, binary: the ``(n_mels, n_frames)`` float16 array in C
  order, little-endian; every row has the shape in the schema metadata. The other sequence
  sets (``sets.SEQUENCE_SETS``: ``whisper_tiny_en_frames``, ``(channels, n_frames)``) alike,
  in a column named after the set.
- ``waveform``: ``n_samples`` (int32) and ``waveform``, binary: int16 little-endian PCM at
  the metadata's ``sampling_rate``; divide by 32768 for float samples.

The schema metadata key ``ser.features`` holds JSON: ``feature_set``, ``fingerprint`` (what
the values depend on; a table is reused only when it matches) and ``params``, plus
``dtype``/``shape``/``sampling_rate`` for sequences. :func:`read_logmel` and
:func:`read_waveforms` decode the sequence tables; by hand, one row is
``np.frombuffer(blob, dtype=info["dtype"]).reshape(info["shape"])`` (waveforms: no reshape).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components.features import sets, waveform

METADATA_KEY = b"ser.features"
KEY_COLUMNS: tuple[str, ...] = ("clip_id", "content_hash")
LABEL_TYPES: dict[str, pa.DataType] = {
    "actor": pa.int16(),
    "emotion": pa.int16(),
    "vocal_channel": pa.int16(),
    "intensity": pa.int16(),
    "statement": pa.int16(),
    "repetition": pa.int16(),
    "gender": pa.string(),
}


def table_schema(feature_set: str, params: Mapping[str, Any]) -> pa.Schema:
    """The Arrow schema of one set's table, its fingerprint and encoding in the metadata."""
    fields = [pa.field(name, pa.string()) for name in KEY_COLUMNS]
    fields += [pa.field(name, kind) for name, kind in LABEL_TYPES.items()]
    info: dict[str, Any] = {
        "feature_set": feature_set,
        "fingerprint": sets.fingerprint(feature_set, params),
        "params": sets.set_params(feature_set, params),
    }
    if feature_set in sets.SCALAR_SETS:
        fields += [pa.field(name, pa.float32()) for name in sets.feature_names(feature_set, params)]
    elif feature_set in sets.SEQUENCE_SETS:
        dtype, shape = sets.sequence_layout(feature_set, params)
        info.update(dtype=dtype.str, shape=list(shape))
        fields.append(pa.field(feature_set, pa.binary()))
    else:
        info.update(dtype=waveform.DTYPE.str, sampling_rate=params["sampling_rate"], scale=waveform.SCALE)
        fields += [pa.field("n_samples", pa.int32()), pa.field("waveform", pa.binary())]
    return pa.schema(fields, metadata={METADATA_KEY: json.dumps(info, sort_keys=True).encode()})


def key_table(clips: pd.DataFrame) -> pa.Table:
    """Key and label columns of clips, typed as every feature table stores them."""
    columns = {name: pa.array(clips[name].to_numpy(), type=pa.string()) for name in KEY_COLUMNS}
    columns.update({name: pa.array(clips[name].to_numpy()).cast(kind) for name, kind in LABEL_TYPES.items()})
    return pa.table(columns)


def feature_columns(schema: pa.Schema) -> list[str]:
    """The columns after the keys and labels."""
    return schema.names[len(KEY_COLUMNS) + len(LABEL_TYPES) :]


def encode_rows(feature_set: str, values: Sequence[np.ndarray], schema: pa.Schema) -> list[pa.Array]:
    """Feature column arrays for rows of extracted values (one array per row, in order)."""
    columns = feature_columns(schema)
    if feature_set in sets.SCALAR_SETS:
        rows = np.stack(values) if values else np.zeros((0, len(columns)), dtype=np.float32)
        by_column = np.ascontiguousarray(rows.T, dtype=np.float32)  # contiguous columns: no copy per column
        return [pa.array(by_column[j], type=pa.float32()) for j in range(len(columns))]
    if feature_set in sets.SEQUENCE_SETS:
        dtype = np.dtype((schema_info(schema) or {})["dtype"])
        return [pa.array([v.astype(dtype, copy=False).tobytes() for v in values], type=pa.binary())]
    pcm = [v.astype(waveform.DTYPE, copy=False) for v in values]
    return [
        pa.array([len(v) for v in pcm], type=pa.int32()),
        pa.array([v.tobytes() for v in pcm], type=pa.binary()),
    ]


def schema_info(schema: pa.Schema) -> dict[str, Any] | None:
    """The ``ser.features`` metadata of a schema, or None when absent or malformed."""
    try:
        return json.loads((schema.metadata or {})[METADATA_KEY])
    except (KeyError, ValueError):
        return None


def read_info(path: str | Path) -> dict[str, Any] | None:
    """The ``ser.features`` metadata of a table file, or None when absent or unreadable."""
    try:
        return schema_info(pq.read_schema(path))
    except (OSError, pa.ArrowException):
        return None


def recorded_params(features_dir: str | Path, feature_sets: Sequence[str]) -> dict[str, Any]:
    """The extraction settings the tables of ``feature_sets`` were computed with (``clip_dur``,
    ``sampling_rate``, ``trim_top_db``, ...), merged; a set without a readable table adds nothing.

    What a model trained on these tables needs at prediction time is what they were built with,
    not what params.yaml says now.
    """
    params: dict[str, Any] = {}
    for name in feature_sets:
        info = read_info(Path(features_dir) / f"{name}.parquet") or {}
        params.update(info.get("params") or {})
    return params


class RowSource:
    """Streams feature columns of an old table for clips requested in ascending ``clip_id`` order.

    Both the old table and the requests are sorted, so a merge over the old table's batches
    keeps one batch in memory however large the table is.
    """

    def __init__(self, path: str | Path, columns: Sequence[str], batch_size: int) -> None:
        self._file = pq.ParquetFile(path)
        self._batches = self._file.iter_batches(
            batch_size=batch_size, columns=["clip_id", *columns], use_threads=False
        )
        self._buffer: pa.Table | None = None
        self._ids: list[str] = []
        self._exhausted = False

    def take(self, clip_ids: Sequence[str]) -> pa.Table:
        """Feature columns of these clips, in this order (ascending, after any earlier request)."""
        if not clip_ids:
            raise ValueError("take() needs at least one clip id")
        while not self._exhausted and (not self._ids or self._ids[-1] < clip_ids[-1]):
            batch = next(self._batches, None)
            if batch is None:
                self._exhausted = True
            else:
                table = pa.Table.from_batches([batch])
                self._buffer = table if self._buffer is None else pa.concat_tables([self._buffer, table])
                self._ids += batch.column(0).to_pylist()
        if self._buffer is None:
            raise KeyError(f"clip {clip_ids[0]} is not in {self._file}")
        where = {clip_id: row for row, clip_id in enumerate(self._ids)}
        rows = [where[clip_id] for clip_id in clip_ids]
        taken = self._buffer.take(rows).drop_columns(["clip_id"])
        self._buffer, self._ids = self._buffer.slice(rows[-1] + 1), self._ids[rows[-1] + 1 :]
        return taken

    def close(self) -> None:
        """Close the old file."""
        self._file.close()


def read_logmel(path: str | Path, dtype: np.dtype | type = np.float32) -> tuple[pd.DataFrame, np.ndarray]:
    """Read a sequence table: ``logmel.parquet`` or another of ``sets.SEQUENCE_SETS``.

    Args:
        path: The table.
        dtype: dtype of the returned array (stored values are float16).

    Returns:
        ``(rows, logmel)``: a DataFrame of keys and labels, and an array of shape
        ``(n_clips, n_mels, n_frames)`` (channels for sets other than log-mel) whose row ``i``
        belongs to ``rows.iloc[i]``.
    """
    table = pq.read_table(path)
    info = schema_info(table.schema) or {}
    shape = tuple(info["shape"])
    blobs = _binary_values(table.column(info.get("feature_set", "logmel")))
    values = np.frombuffer(blobs, dtype=info["dtype"]).reshape((table.num_rows, *shape))
    return _rows(table), values.astype(dtype)


def read_waveforms(
    path: str | Path, clip_ids: Iterable[str] | None = None
) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Read a ``waveform.parquet`` table, whole or for some clips.

    Args:
        path: The table.
        clip_ids: Only these clips (in table order); None reads all.

    Returns:
        ``(rows, signals)``: keys and labels, and one float32 signal in [-1, 1) per row at
        the ``sampling_rate`` of the table's metadata (natural lengths differ).
    """
    filters = None if clip_ids is None else [("clip_id", "in", list(clip_ids))]
    table = pq.read_table(path, filters=filters)
    info = read_info(path) or {}
    pcm = np.frombuffer(_binary_values(table.column("waveform")), dtype=info["dtype"])
    bounds = np.cumsum([0, *table.column("n_samples").to_pylist()])
    signals = [waveform.decode(pcm[a:b]) for a, b in itertools.pairwise(bounds)]
    return _rows(table), signals


def _binary_values(column: pa.ChunkedArray) -> bytes:
    """The concatenated bytes of a binary column's values, in row order."""
    parts = []
    for chunk in column.chunks:
        if len(chunk):
            offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32)  # binary (not large_binary) offsets
            start, end = offsets[chunk.offset], offsets[chunk.offset + len(chunk)]
            parts.append(memoryview(chunk.buffers()[2])[start:end])
    return b"".join(parts)


def _rows(table: pa.Table) -> pd.DataFrame:
    return table.select(list(KEY_COLUMNS) + list(LABEL_TYPES)).to_pandas()
