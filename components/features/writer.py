"""Writing one feature set's table: row groups streamed to a temporary file, old rows reused."""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components.features import sets, store
from components.runtime import interrupts
from components.runtime.files import replace_keeping_mode

ROW_GROUP_ROWS = 128  # about 10 MB of 2.4 s waveforms: memory stays flat, and few groups read fast


class TableWriter:
    """Streams ``<out_dir>/<feature_set>.parquet``, reusing rows of the table already there.

    The table is written to a temporary file in the same folder and renamed over the old
    one by :meth:`commit`; :meth:`abort` (or any failure before commit) leaves the old
    table untouched. Chunks must be written in ``clip_id`` order; they are gathered into row
    groups of ``row_group_rows`` rows (the last one shorter), so the layout does not depend
    on how work was scheduled.

    Args:
        feature_set: The set's name.
        out_dir: Folder of the tables.
        params: Extraction settings (``sets.extract_params``).
        clips: Every clip of this run, sorted by ``clip_id``, with ``content_hash``.
        batch_size: Rows read at a time from the old table.
        row_group_rows: Rows per Parquet row group.
    """

    def __init__(
        self,
        feature_set: str,
        out_dir: Path,
        params: Mapping[str, Any],
        clips: pd.DataFrame,
        batch_size: int,
        row_group_rows: int = ROW_GROUP_ROWS,
    ) -> None:
        self.feature_set = feature_set
        self.path = out_dir / f"{feature_set}.parquet"
        self.schema = store.table_schema(feature_set, params)
        self.reusable = _reusable_ids(self.path, self.schema, clips)
        self.n_rows = self.n_reused = self.n_extracted = 0
        self._row_group_rows = row_group_rows
        self._pending: list[pa.Table] = []
        self._features = pa.schema([self.schema.field(name) for name in store.feature_columns(self.schema)])
        self._tmp = out_dir / f".{self.path.name}.{os.getpid()}.tmp"
        _remove_stale_tmp(out_dir, self.path.name)
        interrupts.track_temporary(self._tmp)  # Ctrl-C removes it even if the run is ended at once
        self._writer = pq.ParquetWriter(
            self._tmp,
            self.schema,
            # zstd shrinks sequences 1.8-2.6x; float columns barely compress and pay its per-column cost
            compression="snappy" if feature_set in sets.SCALAR_SETS else "zstd",
            compression_level=None if feature_set in sets.SCALAR_SETS else 1,  # level 3 costs 2x for 2 % less
            use_dictionary=False,  # feature values rarely repeat; dictionaries would be dropped anyway
            write_statistics=list(store.KEY_COLUMNS),  # lets readers skip row groups by clip_id
        )
        self._source = store.RowSource(self.path, self._features.names, batch_size) if self.reusable else None

    def write_chunk(self, keys: pa.Table, extracted: Mapping[str, np.ndarray]) -> None:
        """Append the chunk's clips that are reused or were extracted, in order.

        Args:
            keys: The chunk's key and label columns (``store.key_table``), failed clips included.
            extracted: ``clip_id`` → this set's array, for the clips extracted this run.
        """
        clip_ids = keys.column("clip_id").to_pylist()
        kept = [
            row for row, clip_id in enumerate(clip_ids) if clip_id in self.reusable or clip_id in extracted
        ]
        if not kept:
            return
        reused = [clip_ids[row] for row in kept if clip_ids[row] in self.reusable]
        new_ids = [clip_ids[row] for row in kept if clip_ids[row] not in self.reusable]
        new = pa.Table.from_arrays(
            store.encode_rows(self.feature_set, [extracted[c] for c in new_ids], self.schema),
            schema=self._features,
        )
        parts = [new]
        if reused:
            assert self._source is not None  # a reusable clip implies an old table
            parts.insert(0, self._source.take(reused).cast(self._features))
        position = {clip_id: i for i, clip_id in enumerate([*reused, *new_ids])}
        features = pa.concat_tables(parts).take([position[clip_ids[row]] for row in kept])
        columns = keys.take(kept).columns + features.columns
        table = pa.Table.from_arrays(columns, schema=self.schema)
        self._pending.append(table)
        if sum(len(t) for t in self._pending) >= self._row_group_rows:
            self._flush(final=False)
        self.n_rows += len(table)
        self.n_reused += len(reused)
        self.n_extracted += len(new_ids)

    def commit(self) -> None:
        """Close the new table and rename it over the old one."""
        self._flush(final=True)
        self._close()
        replace_keeping_mode(self._tmp, self.path)
        interrupts.forget_temporary(self._tmp)

    def abort(self) -> None:
        """Drop the new table; the old one stays as it was."""
        self._pending = []
        self._close()
        self._tmp.unlink(missing_ok=True)
        interrupts.forget_temporary(self._tmp)

    def _flush(self, final: bool) -> None:
        """Write full row groups of pending rows (all of them if ``final``), leaving the rest pending.

        Groups hold exactly ``row_group_rows`` rows, as contiguous arrays, so the file's bytes
        depend only on the rows, not on how chunks happened to split them.
        """
        if not self._pending:
            return
        pending = pa.concat_tables(self._pending)
        size = self._row_group_rows
        stop = len(pending) if final else len(pending) - len(pending) % size
        for start in range(0, stop, size):
            group = pending.slice(start, min(size, stop - start)).combine_chunks()
            self._writer.write_table(group, row_group_size=len(group))
        self._pending = [pending.slice(stop)] if stop < len(pending) else []

    def _close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _remove_stale_tmp(out_dir: Path, table_name: str) -> None:
    """Delete temporary files a killed run left (its process is gone); a live writer's stay."""
    for tmp in out_dir.glob(f".{table_name}.*.tmp"):
        pid = tmp.name.removeprefix(f".{table_name}.").removesuffix(".tmp")
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # a process of another user: alive


def _reusable_ids(path: Path, schema: pa.Schema, clips: pd.DataFrame) -> set[str]:
    """Clips whose rows in the existing table can be kept: same settings and same content hash."""
    if not path.exists():
        return set()
    info, wanted = store.read_info(path), store.schema_info(schema) or {}
    if info is None or info.get("fingerprint") != wanted.get("fingerprint"):
        return set()
    try:
        if not pq.read_schema(path).remove_metadata().equals(schema.remove_metadata()):
            return set()
        keys = pq.read_table(path, columns=list(store.KEY_COLUMNS), use_threads=False)
    except (OSError, pa.ArrowException):
        return set()
    ids = keys.column("clip_id").to_pylist()
    if any(a >= b for a, b in itertools.pairwise(ids)):
        return set()  # not sorted and unique: not a table this module wrote
    current = dict(zip(clips["clip_id"], clips["content_hash"], strict=True))
    hashes = keys.column("content_hash").to_pylist()
    return {clip_id for clip_id, digest in zip(ids, hashes, strict=True) if current.get(clip_id) == digest}
