"""Mapping the feature extractors over clips and streaming one Parquet table per feature set.

:func:`featurize` reads each clip once (``discover.read_bytes``, then ``audio.load_clip``
at its natural length), extracts every requested set from it (:func:`extract_chunk`, a
pure function of plain data, run by a process pool or any ordered ``map``), and appends
the rows to ``<out_dir>/<set>.parquet`` as chunks complete, in row groups of
``row_group_rows``, so memory stays flat however large the corpus. Rows are in ``clip_id``
order and the files are byte-identical whatever ``n_jobs``, ``chunk_size`` or runner.
Rows of an existing table made with the same settings (a fingerprint in its metadata) are
reused when the clip's ``content_hash`` is unchanged. Tables are written to a temporary
file and renamed, so a failed run leaves the old ones intact. The table layout is
described in ``components.features.store``; decode sequence tables with
:func:`read_logmel` and :func:`read_waveforms`.
"""

from __future__ import annotations

import itertools
import multiprocessing
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from components.data.audio import load_clip
from components.data.discover import read_bytes
from components.errors import SerError
from components.features import sets, store
from components.features.store import read_logmel, read_waveforms
from components.features.writer import ROW_GROUP_ROWS, TableWriter

__all__ = ["ChunkTask", "FeaturizeSummary", "extract_chunk", "featurize", "read_logmel", "read_waveforms"]

REQUIRED_COLUMNS: tuple[str, ...] = ("clip_id", "location", "content_hash", *store.LABEL_TYPES)


@dataclass(frozen=True)
class Failure:
    """A clip that could not be loaded, and why."""

    clip_id: str
    location: str
    message: str


@dataclass(frozen=True)
class ChunkTask:
    """Plain data for one worker call: ``(clip_id, location, sets to extract)`` per clip."""

    clips: tuple[tuple[str, str, tuple[str, ...]], ...]
    params: dict[str, Any]


@dataclass
class ChunkResult:
    """What a worker returns: ``clip_id`` → set → array, and the clips that failed to load."""

    values: dict[str, dict[str, np.ndarray]]
    failures: list[Failure]


@dataclass
class SetSummary:
    """Rows of one written table: all of them, those kept from the old table, those extracted."""

    n_rows: int
    n_reused: int
    n_extracted: int


@dataclass
class FeaturizeSummary:
    """What a :func:`featurize` run did."""

    n_clips: int
    sets: dict[str, SetSummary] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0


MapFn = Callable[[Callable[[ChunkTask], ChunkResult], Iterable[ChunkTask]], Iterable[ChunkResult]]


def extract_chunk(task: ChunkTask) -> ChunkResult:
    """Load and extract a chunk of clips (pure and picklable: the unit a worker runs).

    A clip that fails to load (``SerError``) is reported as a failure; other errors propagate.
    """
    params, result = task.params, ChunkResult({}, [])
    for clip_id, location, feature_sets in task.clips:
        try:
            signal = load_clip(
                read_bytes(location),
                clip_dur=None,
                trim_top_db=params["trim_top_db"],
                sampling_rate=params["sampling_rate"],
                name=location,
            )
        except SerError as err:
            result.failures.append(Failure(clip_id, location, str(err)))
            continue
        result.values[clip_id] = sets.extract_sets(signal, params["sampling_rate"], feature_sets, params)
    return result


def featurize(
    clips: pd.DataFrame,
    out_dir: str | Path,
    feature_sets: Iterable[str],
    params: Mapping[str, Any],
    *,
    n_jobs: int = 1,
    chunk_size: int = 16,
    row_group_rows: int = ROW_GROUP_ROWS,
    map_fn: MapFn | None = None,
    progress: bool = True,
    start_method: str | None = None,
) -> FeaturizeSummary:
    """Extract feature sets from clips into ``<out_dir>/<set>.parquet``, incrementally.

    Args:
        clips: One row per clip with ``clip_id``, ``location`` (a path or ``zip::member``),
            ``content_hash`` and the label columns of ``store.LABEL_TYPES``.
        out_dir: Folder of the tables (created if missing).
        feature_sets: Names from ``sets.FEATURE_SETS``.
        params: Settings as ``sets.extract_params(preprocess, featurize)`` returns them.
        n_jobs: Worker processes; 1 runs in this process.
        chunk_size: Clips per worker call: small chunks keep both workers busy to the end.
        row_group_rows: Rows per Parquet row group (the file layout; chunks are gathered).
        map_fn: Replaces the process pool: any ordered ``map(fn, iterable)``, such as
            ``Executor.map``; ``n_jobs`` is then ignored.
        progress: Show a tqdm progress bar.
        start_method: multiprocessing start method of the pool; default ``fork`` where the
            platform has it (workers inherit the parent's imports and filterbanks), else
            ``spawn``.

    Returns:
        Counts per set, the clips that failed to load (absent from every table; the caller
        decides whether that is acceptable), and the wall time.

    Raises:
        SerError: A required column is missing, a ``clip_id`` repeats, or a set is unknown.
    """
    started = time.perf_counter()
    names = sets.check_sets(feature_sets)
    table = _sorted_clips(clips)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = FeaturizeSummary(n_clips=len(table))
    with ExitStack() as stack:
        writers = []
        for name in names:
            writer = TableWriter(name, out_dir, params, table, chunk_size, row_group_rows)
            stack.callback(writer.abort)  # a no-op after commit
            writers.append(writer)
        keys = store.key_table(table)
        starts = range(0, len(table), chunk_size)
        tasks = [_task(table.iloc[start : start + chunk_size], writers, params) for start in starts]
        todo = [task for task in tasks if task is not None]
        mapper = map_fn or (_default_map(stack, n_jobs, names, params, start_method) if todo else map)
        results = iter(mapper(extract_chunk, todo))
        bar = stack.enter_context(tqdm(total=len(table), unit="clip", desc="featurize", disable=not progress))
        for start, task in zip(starts, tasks, strict=True):
            chunk = keys.slice(start, chunk_size)
            result = next(results) if task is not None else ChunkResult({}, [])
            summary.failures += result.failures
            for writer in writers:
                name = writer.feature_set
                writer.write_chunk(
                    chunk, {c: arrays[name] for c, arrays in result.values.items() if name in arrays}
                )
            bar.update(chunk.num_rows)
        for writer in writers:
            writer.commit()
            summary.sets[writer.feature_set] = SetSummary(writer.n_rows, writer.n_reused, writer.n_extracted)
    summary.seconds = time.perf_counter() - started
    return summary


def ordered_map(
    executor: Executor, fn: Callable[[Any], Any], items: Iterable[Any], ahead: int
) -> Iterator[Any]:
    """``executor.map`` that submits at most ``ahead`` items beyond the one being consumed.

    Results come back in input order; a slow item holds back at most ``ahead`` finished
    ones, so memory does not grow with the number of items.
    """
    pending: deque = deque()
    iterator = iter(items)
    for item in itertools.islice(iterator, ahead):
        pending.append(executor.submit(fn, item))
    while pending:
        result = pending.popleft().result()
        for item in itertools.islice(iterator, 1):
            pending.append(executor.submit(fn, item))
        yield result


def _default_map(
    stack: ExitStack, n_jobs: int, names: tuple[str, ...], params: Mapping[str, Any], start_method: str | None
) -> MapFn:
    """The builtin ``map`` for one job, else an ordered map over a process pool owned by ``stack``."""
    if n_jobs <= 1:
        return map
    method = start_method or ("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    if method == "fork":
        sets.warm_up(names, params)  # children inherit the imports, filterbanks and openSMILE object
    pool = ProcessPoolExecutor(
        n_jobs,
        mp_context=multiprocessing.get_context(method),
        initializer=sets.warm_up,
        initargs=(names, dict(params)),
    )
    stack.enter_context(pool)
    pool.submit(int).result()  # start the workers now, before the progress bar's thread exists
    return lambda fn, items: ordered_map(pool, fn, items, ahead=2 * n_jobs)


def _task(chunk: pd.DataFrame, writers: list[TableWriter], params: Mapping[str, Any]) -> ChunkTask | None:
    """The chunk's clips with the sets each still needs, or None when every row is reused."""
    clips = []
    for clip_id, location in zip(chunk["clip_id"].tolist(), chunk["location"].tolist(), strict=True):
        needed = tuple(w.feature_set for w in writers if clip_id not in w.reusable)
        if needed:
            clips.append((clip_id, location, needed))
    return ChunkTask(tuple(clips), dict(params)) if clips else None


def _sorted_clips(clips: pd.DataFrame) -> pd.DataFrame:
    missing = [name for name in REQUIRED_COLUMNS if name not in clips.columns]
    if missing:
        raise SerError(f"featurize: the clip table lacks columns {missing}; build it with the ingest stage")
    repeated = clips["clip_id"][clips["clip_id"].duplicated()].unique()
    if len(repeated):
        raise SerError(
            f"featurize: clip ids {list(repeated[:5])} appear more than once; deduplicate the clips"
        )
    return clips.sort_values("clip_id", kind="stable").reset_index(drop=True)
