"""The metadata table: one row per readable clip (labels, hash, audio statistics), plus rejects.

Each file is read once: the same bytes are hashed and decoded. Files that cannot be decoded
join the files :func:`components.data.discover.discover` left out, each with its reason.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import PurePath

import numpy as np
import pandas as pd

from components.data.audio import read_audio
from components.data.discover import ZIP_SEPARATOR, AudioFile, Discovery, read_bytes
from components.errors import SerError
from components.data.ravdess import FIELDS, parse_name

CLIPPED_LEVEL = 0.999  # |x| at or above this share of full scale counts as a clipped sample
FRAME_DUR = 0.025  # seconds; frames for the silence measure (a common speech analysis frame)
LABEL_COLUMNS: tuple[str, ...] = (*FIELDS, "gender", "channel_name", "emotion_name")
STAT_COLUMNS: tuple[str, ...] = (
    "sampling_rate",
    "n_channels",
    "audio_dur",
    "peak",
    "rms",
    "clipped_share",
    "silent_share",
)
CLIP_COLUMNS: tuple[str, ...] = (
    "clip_id",
    "location",
    "size_bytes",
    "content_hash",
    *LABEL_COLUMNS,
    *STAT_COLUMNS,
)
REJECTED_COLUMNS: tuple[str, ...] = ("location", "clip_id", "reason")
_INT_COLUMNS = (*FIELDS, "size_bytes", "sampling_rate", "n_channels")
CLIP_DTYPES: dict[str, str] = {
    name: "int64" if name in _INT_COLUMNS else "float64" if name in STAT_COLUMNS else "str"
    for name in CLIP_COLUMNS
}


def describe_signal(
    signal: np.ndarray, sampling_rate: int, silence_dbfs: float, frame_dur: float = FRAME_DUR
) -> dict[str, float | int]:
    """Level statistics of a ``(n_samples, n_channels)`` float signal in full-scale units.

    Args:
        signal: Samples in [-1, 1] full scale, as :func:`components.data.audio.read_audio` returns.
        sampling_rate: Its rate in Hz.
        silence_dbfs: A frame whose RMS (over all channels) is below this many dBFS is silent.
        frame_dur: Length in seconds of the non-overlapping frames of the silence measure.

    Returns:
        ``sampling_rate``, ``n_channels``, ``audio_dur`` (s), ``peak`` (max |x|), ``rms``,
        ``clipped_share`` (share of samples with |x| >= 0.999) and ``silent_share`` (share of
        frames below ``silence_dbfs``; a file shorter than one frame is one frame).
    """
    n_samples, n_channels = signal.shape
    magnitude = np.abs(signal)
    square = np.square(signal[:, 0]) if n_channels == 1 else np.square(signal).mean(axis=1)  # over channels
    frame = max(1, round(frame_dur * sampling_rate))
    n_frames = max(1, n_samples // frame)
    frame_power = (
        (square[: n_frames * frame] if n_samples >= frame else square).reshape(n_frames, -1).mean(axis=1)
    )
    threshold = 10.0 ** (silence_dbfs / 10.0)  # dBFS of an RMS level, as a power
    return {
        "sampling_rate": int(sampling_rate),
        "n_channels": int(n_channels),
        "audio_dur": n_samples / sampling_rate,
        "peak": float(magnitude.max()),
        "rms": float(np.sqrt(square.mean(dtype=np.float64))),
        "clipped_share": float(np.count_nonzero(magnitude >= CLIPPED_LEVEL) / magnitude.size),
        "silent_share": float(np.count_nonzero(frame_power < threshold) / n_frames),
    }


def describe_file(file: AudioFile, silence_dbfs: float, frame_dur: float = FRAME_DUR) -> dict[str, object]:
    """One clips-table row for a discovered file.

    Raises:
        SerError: The file cannot be read or decoded; the message starts with its location.
    """
    data = read_bytes(file.location)
    if not data:
        raise SerError(f"{file.location}: the file is empty (zero length, 0 bytes)")
    signal, sampling_rate = read_audio(data, name=file.location)
    return {
        "clip_id": file.clip_id,
        "location": file.location,
        "size_bytes": len(data),
        "content_hash": hashlib.sha256(data).hexdigest(),
        **file.labels.as_dict(),
        **describe_signal(signal, sampling_rate, silence_dbfs, frame_dur),
    }


def _describe_or_reject(args: tuple[AudioFile, float, float]) -> dict[str, object] | str:
    """A row, or the reason the file was rejected (picklable for worker processes)."""
    file, silence_dbfs, frame_dur = args
    try:
        return describe_file(file, silence_dbfs, frame_dur)
    except SerError as err:
        return str(err).removeprefix(f"{file.location}: ")


def _clip_id_of(location: str) -> str:
    """The clip id a location's file name parses to, or ``""``."""
    try:
        return parse_name(PurePath(location.rpartition(ZIP_SEPARATOR)[2]).name).clip_id
    except SerError:
        return ""


def _outcomes(
    tasks: list[tuple[AudioFile, float, float]], n_jobs: int, start_method: str | None
) -> list[dict[str, object] | str]:
    """Rows or reasons, in the order of ``tasks`` whatever ``n_jobs`` is."""
    if n_jobs <= 1 or len(tasks) < 2:
        return [_describe_or_reject(task) for task in tasks]
    # fork by default, as featurize does: spawn re-imports the caller's main module (Prefect, Great
    # Expectations) in every worker, seconds each, more than reading the whole sample takes
    method = start_method or ("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(max_workers=min(n_jobs, len(tasks)), mp_context=context) as executor:
        chunksize = max(1, len(tasks) // (8 * n_jobs))  # few round trips, yet balanced across workers
        return list(executor.map(_describe_or_reject, tasks, chunksize=chunksize))


def build_metadata(
    discovery: Discovery,
    silence_dbfs: float,
    frame_dur: float = FRAME_DUR,
    n_jobs: int = 1,
    start_method: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read every discovered file once and tabulate it, or reject it with a reason.

    Args:
        discovery: What :func:`components.data.discover.discover` found.
        silence_dbfs: Frame level (dBFS) below which a frame counts as silent.
        frame_dur: Seconds per frame of the silence measure.
        n_jobs: Worker processes; 1 reads in this process. Row order never depends on it.
        start_method: Multiprocessing start method of the pool; default ``fork`` where the
            platform has it, else ``spawn``.

    Returns:
        ``(clips, rejected)``: ``clips`` has the columns :data:`CLIP_COLUMNS`, one row per
        readable file in discovery order; ``rejected`` has :data:`REJECTED_COLUMNS` (``clip_id``
        empty when the name did not parse): discovery's rejects first, then unreadable files.
    """
    tasks = [(file, silence_dbfs, frame_dur) for file in discovery.files]
    rows: list[dict[str, object]] = []
    rejected = [(location, _clip_id_of(location), reason) for location, reason in discovery.rejected]
    for file, outcome in zip(discovery.files, _outcomes(tasks, n_jobs, start_method), strict=True):
        if isinstance(outcome, str):
            rejected.append((file.location, file.clip_id, outcome))
        else:
            rows.append(outcome)
    # explicit types, so an empty table has the same schema as a full one
    clips = pd.DataFrame(rows, columns=list(CLIP_COLUMNS)).astype(CLIP_DTYPES)
    return clips, pd.DataFrame(rejected, columns=list(REJECTED_COLUMNS)).astype(str)
