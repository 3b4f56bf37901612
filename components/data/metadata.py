"""The metadata table: one row per readable clip (labels, hash, audio statistics), plus rejects.

Each file is read once: the same bytes are hashed and decoded. Files that cannot be decoded
join the files :func:`components.data.discover.discover` left out, each with its reason.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path, PurePath
from typing import BinaryIO

import numpy as np
import pandas as pd

from components.data.audio import iter_blocks, probe_audio
from components.data.clip_checks import ClipLimits, check_header
from components.data.discover import ZIP_SEPARATOR, AudioFile, Discovery, open_location
from components.errors import SerError
from components.data.ravdess import FIELDS, parse_name

CLIPPED_LEVEL = 0.999  # |x| at or above this share of full scale counts as a clipped sample
FRAME_DUR = 0.025  # seconds; frames for the silence measure (a common speech analysis frame)
HASH_CHUNK = 1 << 20  # bytes hashed at a time
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
    "corpus",  # the adapter that read it (components.data.corpora): ravdess unless ingest names others
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


class LevelMeter:
    """The level statistics of :func:`describe_signal`, gathered block by block (flat memory).

    Args:
        sampling_rate: The signal's rate in Hz.
        n_channels: Its channel count.
        silence_dbfs: A frame varying by less than this many dBFS around its mean is silent.
        frame_dur: Length in seconds of the non-overlapping frames of the silence measure.
    """

    def __init__(
        self, sampling_rate: int, n_channels: int, silence_dbfs: float, frame_dur: float = FRAME_DUR
    ) -> None:
        self.sampling_rate, self.n_channels = int(sampling_rate), int(n_channels)
        self.frame = max(1, round(frame_dur * sampling_rate))
        self.threshold = 10.0 ** (silence_dbfs / 10.0)  # dBFS of an RMS level, as a power
        self.n_samples = self.n_clipped = self.n_frames = self.n_silent = 0
        self.peak, self.sum_square = 0.0, 0.0
        self._rest = np.empty((0, self.n_channels), np.float32)  # samples short of a whole frame

    def add(self, block: np.ndarray) -> None:
        """Take the next ``(n_samples, n_channels)`` samples."""
        if block.shape[0] == 0:
            return
        magnitude = np.abs(block)
        self.n_samples += block.shape[0]
        self.peak = max(self.peak, float(magnitude.max()))
        self.n_clipped += int(np.count_nonzero(magnitude >= CLIPPED_LEVEL))
        self.sum_square += float(np.square(block, dtype=np.float64).sum()) / self.n_channels
        data = np.concatenate([self._rest, block]) if len(self._rest) else block
        n_whole = len(data) // self.frame
        self._count_frames(data[: n_whole * self.frame])
        self._rest = data[n_whole * self.frame :]

    def _count_frames(self, data: np.ndarray) -> None:
        if len(data) == 0:
            return
        frames = data.reshape(-1, self.frame, self.n_channels).astype(np.float64)
        # power around each frame's mean, over all channels together: a DC offset is no sound
        power = frames.var(axis=1).mean(axis=1)
        self.n_frames += len(power)
        self.n_silent += int(np.count_nonzero(power < self.threshold))

    def result(self) -> dict[str, float | int]:
        """The statistics of everything added (see :func:`describe_signal`)."""
        n_frames, n_silent = self.n_frames, self.n_silent
        if n_frames == 0 and len(self._rest):  # shorter than one frame: it is one frame
            n_frames, n_silent = 1, int(self._rest.astype(np.float64).var(axis=0).mean() < self.threshold)
        n_values = max(1, self.n_samples * self.n_channels)
        return {
            "sampling_rate": self.sampling_rate,
            "n_channels": self.n_channels,
            "audio_dur": self.n_samples / self.sampling_rate,
            "peak": self.peak,
            "rms": float(np.sqrt(self.sum_square / max(1, self.n_samples))),
            "clipped_share": self.n_clipped / n_values,
            "silent_share": n_silent / max(1, n_frames),
        }


def describe_signal(
    signal: np.ndarray, sampling_rate: int, silence_dbfs: float, frame_dur: float = FRAME_DUR
) -> dict[str, float | int]:
    """Level statistics of a ``(n_samples, n_channels)`` float signal in full-scale units.

    Args:
        signal: Samples in [-1, 1] full scale, as :func:`components.data.audio.read_audio` returns.
        sampling_rate: Its rate in Hz.
        silence_dbfs: A frame whose RMS around its mean (over all channels) is below this many
            dBFS is silent; a constant (DC-only) frame is silent too.
        frame_dur: Length in seconds of the non-overlapping frames of the silence measure.

    Returns:
        ``sampling_rate``, ``n_channels``, ``audio_dur`` (s), ``peak`` (max |x|), ``rms``,
        ``clipped_share`` (share of samples with |x| >= 0.999) and ``silent_share`` (share of
        frames below ``silence_dbfs``; a file shorter than one frame is one frame).
    """
    signal = np.asarray(signal, dtype=np.float32)
    signal = signal[:, None] if signal.ndim == 1 else signal
    meter = LevelMeter(sampling_rate, signal.shape[1], silence_dbfs, frame_dur)
    meter.add(signal)
    return meter.result()


def describe_audio(
    source: str | Path | BinaryIO, name: str, silence_dbfs: float, frame_dur: float = FRAME_DUR
) -> dict[str, float | int]:
    """:func:`describe_signal` of a file, decoded block by block (memory flat whatever its length).

    Raises:
        SerError: Not a regular file, unreadable, or NaN/Inf samples; the message starts with ``name``.
    """
    info = probe_audio(source, name)
    meter = LevelMeter(info.sampling_rate, info.n_channels, silence_dbfs, frame_dur)
    for block in iter_blocks(source, name=name):
        meter.add(block)
    if meter.n_samples == 0:
        raise SerError(f"{name}: the file holds no samples (zero length)")
    return meter.result()


def describe_file(
    file: AudioFile, silence_dbfs: float, frame_dur: float = FRAME_DUR, limits: ClipLimits | None = None
) -> dict[str, object]:
    """One clips-table row for a discovered file, read in blocks (never whole).

    With ``limits``, a rate or duration out of bounds is decided from the header, and the file is
    rejected before a sample is decoded (an hour-long file costs nothing).

    Raises:
        SerError: The file cannot be read or decoded, or its header is out of ``limits``; the
            message starts with its location.
    """
    with open_location(file.location) as source:
        info = probe_audio(source, file.location)
        if limits is not None:
            check_header(file.location, info.sampling_rate, info.n_frames, limits)
        digest, size = hashlib.sha256(), 0
        for chunk in iter(lambda: source.read(HASH_CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
        source.seek(0)
        stats = describe_audio(source, file.location, silence_dbfs, frame_dur)
    return {
        "clip_id": file.clip_id,
        "location": file.location,
        "size_bytes": size,
        "content_hash": digest.hexdigest(),
        **file.labels.as_dict(),
        **stats,
    }


def _describe_or_reject(args: tuple[AudioFile, float, float, ClipLimits | None]) -> dict[str, object] | str:
    """A row, or the reason the file was rejected (picklable for worker processes)."""
    file, silence_dbfs, frame_dur, limits = args
    try:
        return describe_file(file, silence_dbfs, frame_dur, limits)
    except SerError as err:
        return str(err).removeprefix(f"{file.location}: ")


def _clip_id_of(location: str) -> str:
    """The clip id a location's file name parses to, or ``""``."""
    try:
        return parse_name(PurePath(location.rpartition(ZIP_SEPARATOR)[2]).name).clip_id
    except SerError:
        return ""


def _outcomes(
    tasks: list[tuple[AudioFile, float, float, ClipLimits | None]], n_jobs: int, start_method: str | None
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
    limits: ClipLimits | None = None,
    corpus: str = "ravdess",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read every discovered file once and tabulate it, or reject it with a reason.

    Args:
        discovery: What :func:`components.data.discover.discover` found.
        silence_dbfs: Frame level (dBFS) below which a frame counts as silent.
        frame_dur: Seconds per frame of the silence measure.
        n_jobs: Worker processes; 1 reads in this process. Row order never depends on it.
        start_method: Multiprocessing start method of the pool; default ``fork`` where the
            platform has it, else ``spawn``.
        limits: Reject a file whose header's rate or duration is out of these bounds before
            decoding it (with the reason the validation suite would give); None decodes every file.
        corpus: The ``corpus`` column's value: the corpus the files belong to.

    Returns:
        ``(clips, rejected)``: ``clips`` has the columns :data:`CLIP_COLUMNS`, one row per
        readable file in discovery order; ``rejected`` has :data:`REJECTED_COLUMNS` (``clip_id``
        empty when the name did not parse): discovery's rejects first, then unreadable files.
    """
    tasks = [(file, silence_dbfs, frame_dur, limits) for file in discovery.files]
    rows: list[dict[str, object]] = []
    rejected = [(location, _clip_id_of(location), reason) for location, reason in discovery.rejected]
    for file, outcome in zip(discovery.files, _outcomes(tasks, n_jobs, start_method), strict=True):
        if isinstance(outcome, str):
            rejected.append((file.location, file.clip_id, outcome))
        else:
            rows.append(outcome)
    # explicit types, so an empty table has the same schema as a full one
    clips = pd.DataFrame(rows, columns=list(CLIP_COLUMNS)).assign(corpus=corpus).astype(CLIP_DTYPES)
    return clips, pd.DataFrame(rejected, columns=list(REJECTED_COLUMNS)).astype(str)
