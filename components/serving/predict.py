"""``ser predict``: score audio files with a registered model, in batches, long ones in windows.

No Prefect here: prediction is interactive and needs nothing but the MLflow store.
"""

from __future__ import annotations

import csv
import glob
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from components.data.audio import READABLE_SUFFIXES, read_frames
from components.data.clip_checks import ClipLimits
from components.data.ravdess import EMOTIONS, parse_name
from components.errors import SerError
from components.evaluation.metrics import compute_metrics, format_table
from components.runtime.files import write_json, write_text
from components.serving.checks import check_file
from components.serving.windows import Window, mean_probabilities, plan_windows, top_k

AUDIO_SUFFIXES: tuple[str, ...] = READABLE_SUFFIXES
LONG_FACTOR = 1.5  # recordings up to 1.5 x clip_dur are scored whole: the models saw whole 3-6 s clips
PROGRESS_MIN_FILES = 20  # fewer files than this finish before a progress bar says anything useful
CODES: dict[str, int] = {name: code for code, name in EMOTIONS.items()}

Scorer = Callable[[list[tuple[np.ndarray, int]]], pd.DataFrame]


@dataclass
class FileResult:
    """What one input file got: its label and probabilities, per-window ones, or an error."""

    path: str
    duration: float | None = None
    label: str | None = None
    confidence: float | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    windows: list[dict[str, Any]] = field(default_factory=list)
    true_label: str | None = None
    error: str | None = None
    speaker: str | None = None  # speaker adaptation: the speaker it was grouped with (None: not asked)
    adaptation: str | None = None  # what it got: "adapted (8 clips)", "plain (3 clips, fewer than 4)"

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` likeliest emotions with their probabilities."""
        return top_k(list(self.probabilities.values()), list(self.probabilities), k)

    def as_dict(self, speakers: bool = False) -> dict[str, Any]:
        """Plain data for JSON (windows included); ``speakers``: also ``speaker`` and ``adaptation``."""
        data = {
            "file": self.path,
            "duration": self.duration,
            "label": self.label,
            "confidence": self.confidence,
            "top3": [{"label": name, "probability": p} for name, p in self.top()] if self.label else [],
            "probabilities": self.probabilities,
            "true_label": self.true_label,
            "windows": self.windows,
            "error": self.error,
        }
        return data | ({"speaker": self.speaker, "adaptation": self.adaptation} if speakers else {})


def find_audio(inputs: Iterable[str]) -> tuple[list[Path], list[FileResult]]:
    """Expand files, folders (recursively) and glob patterns into audio files, in a stable order.

    A folder contributes the files with an audio suffix (:data:`AUDIO_SUFFIXES`); a file named
    outright is tried whatever its suffix. Each file appears once.

    Returns:
        The files, and an error result for each input that matched nothing.
    """
    found: dict[Path, None] = {}
    missing: list[FileResult] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            matches = _audio_under(path)
            if not matches:
                missing.append(FileResult(item, error=f"{item}: folder holds no audio files"))
        elif path.is_file() or path.is_symlink() or path.exists():
            matches = [path]  # a device, FIFO or dangling link too: reading it says what is wrong
        elif glob.has_magic(item):
            hits = sorted(Path(p) for p in glob.glob(item, recursive=True))
            matches = [p for hit in hits for p in (_audio_under(hit) if hit.is_dir() else [hit])]
            if not matches:
                missing.append(FileResult(item, error=f"{item}: no file matches this pattern"))
        else:
            missing.append(FileResult(item, error=f"{item}: no such file or folder"))
            continue
        found.update(dict.fromkeys(matches))
    return list(found), missing


def _audio_under(folder: Path) -> list[Path]:
    # not only regular files: a dangling or device symlink gets its own error line, not silence
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and not p.is_dir())


def set_torch_threads(n_threads: int) -> None:
    """Threads torch may use per operation (deep models only).

    A clip is a small job: on a 2-core machine shared with other work, two threads per
    operation made a CNN's single-clip latency 84 ms instead of 6 ms (they wait for each
    other), see ``reports/predict.md``. One thread is the default of ``ser predict``.
    """
    import torch

    if n_threads < 1:
        raise SerError(f"--threads {n_threads}: give at least 1")
    torch.set_num_threads(n_threads)


def true_label(path: str | Path) -> str | None:
    """The emotion a RAVDESS file name carries, or None for other names."""
    try:
        return parse_name(path).emotion_name
    except SerError:
        return None


@dataclass
class _Pending:
    """A window waiting for its batch."""

    index: int  # the file's position in the results
    window: Window
    signal: np.ndarray
    rate: int


def predict_files(
    paths: Sequence[str | Path],
    score: Scorer,
    clip_dur: float,
    hop_dur: float | None = None,
    long_dur: float | None = None,
    batch_size: int = 32,
    progress: bool | None = None,
    checks: ClipLimits | None = None,
) -> list[FileResult]:
    """Score every file; long ones window by window, all windows of all files in batches.

    Args:
        paths: Audio files (any rate, channel count and length soundfile reads).
        score: Raw ``(signal, rate)`` pairs → a table with ``prob_<emotion>`` columns.
        clip_dur: The model's clip length: the window length (seconds).
        hop_dur: Seconds between window starts; default half a window.
        long_dur: Recordings up to this long are scored whole; default ``LONG_FACTOR * clip_dur``.
        batch_size: Windows scored per call of ``score``.
        progress: Show a progress bar (default: for :data:`PROGRESS_MIN_FILES` files or more).
        checks: The per-clip checks of whole files (the model's recorded ``validate`` limits;
            default: validate's defaults). Any length is scored: ``max_audio_dur`` is not applied.

    Returns:
        One result per path, in order; unreadable files and files that fail a check (rate,
        duration, silence, DC, clipping) carry a one-line ``error`` instead of a label.
        Files are streamed: one window at a time is decoded, so memory does not grow with length.
    """
    if batch_size < 1:
        raise SerError(f"--batch-size {batch_size}: give at least 1")
    hop_dur = clip_dur / 2 if hop_dur is None else hop_dur
    long_dur = LONG_FACTOR * clip_dur if long_dur is None else long_dur
    plan_windows(1, 1, clip_dur, hop_dur)  # a bad window setting fails once, not once per file
    checks = (checks or ClipLimits()).without_max_dur()  # long recordings are windowed, not refused
    results = [FileResult(str(path), true_label=true_label(path)) for path in paths]
    window_probs: list[list[np.ndarray]] = [[] for _ in paths]
    names: list[str] = []
    show = len(paths) >= PROGRESS_MIN_FILES if progress is None else progress
    pending: list[_Pending] = []

    def flush() -> None:
        for item, table in zip(pending, _score_batch(score, pending), strict=True):
            result = results[item.index]
            if isinstance(table, str):
                result.error = result.error or f"{result.path}: {table}"
                continue
            columns = [c for c in table.index if str(c).startswith("prob_")]
            names[:] = names or [str(c).removeprefix("prob_") for c in columns]
            probs = table[columns].to_numpy(dtype=np.float64)
            window_probs[item.index].append(probs)
            best = int(probs.argmax())
            result.windows.append(
                {
                    "start": round(item.window.start_dur, 3),
                    "end": round(item.window.stop_dur, 3),
                    "label": names[best],
                    "confidence": float(probs[best]),
                    "probabilities": dict(zip(names, map(float, probs), strict=True)),
                }
            )
        pending.clear()

    for index, path in enumerate(tqdm(paths, desc="predict", unit="file", disable=not show)):
        try:
            # the whole file, not each window: a pause inside a long recording is no error
            n_samples, rate = check_file(path, checks)
            windows = plan_windows(n_samples, rate, clip_dur, hop_dur, long_dur)
        except SerError as err:
            results[index].error = str(err)
            continue
        results[index].duration = round(n_samples / rate, 3)
        for window in windows:
            try:  # one window decoded at a time: memory stays flat however long the file
                piece = read_frames(path, window.start, window.stop)
            except SerError as err:  # changed or truncated since it was checked
                results[index].error = str(err)
                break
            pending.append(_Pending(index, window, piece, rate))
            if len(pending) >= batch_size:
                flush()
    flush()
    for result, probs in zip(results, window_probs, strict=True):
        if result.error is not None:  # unreadable, or a window the model could not score
            result.windows = []
            continue
        mean = mean_probabilities(np.stack(probs))
        best = int(mean.argmax())
        result.label, result.confidence = names[best], float(mean[best])
        result.probabilities = dict(zip(names, map(float, mean), strict=True))
        if len(result.windows) == 1:
            result.windows = []  # scored whole: no windows to show
    return results


def _score_batch(score: Scorer, batch: list[_Pending]) -> Iterator[pd.Series | str]:
    """Each window's row of predictions; a batch that fails is retried item by item to find the culprit."""
    if not batch:
        return iter(())
    try:
        table = score([(item.signal, item.rate) for item in batch])
        return (row for _, row in table.iterrows())
    except Exception:  # one odd clip (e.g. a few samples long) must not sink the others
        rows: list[pd.Series | str] = []
        for item in batch:
            try:
                rows.append(score([(item.signal, item.rate)]).iloc[0])
            except Exception as err:
                rows.append(f"the model could not score it ({type(err).__name__}: {err})")
        return iter(rows)


def summarize(results: Sequence[FileResult]) -> dict[str, Any] | None:
    """Accuracy, UAR and confusion matrix over the RAVDESS-named files that got a label (None if none)."""
    scored = [r for r in results if r.label is not None and r.true_label is not None]
    if not scored:
        return None
    return compute_metrics([CODES[r.true_label] for r in scored], [CODES[r.label] for r in scored])


def format_results(results: Sequence[FileResult], show_windows: bool = False) -> str:
    """The per-file table (and, with ``show_windows``, a per-window one) as Markdown text."""
    labelled = any(r.true_label for r in results)
    windowed = any(r.windows for r in results)
    rows = []
    for r in results:
        row: dict[str, Any] = {"file": r.path}
        if r.error is not None:
            row["emotion"] = "error"
        else:
            row |= {
                "emotion": r.label,
                "confidence": r.confidence,
                "top-3": ", ".join(f"{name} {p:.2f}" for name, p in r.top()),
            }
        if labelled:
            row["true"] = r.true_label or ""
        if windowed and r.error is None:
            row["windows"] = len(r.windows) or 1
        rows.append(row)
    columns = ["file", "emotion", "confidence", "top-3", *(["true"] * labelled), *(["windows"] * windowed)]
    text = format_table(rows, columns)
    if show_windows and windowed:
        window_rows = [
            {
                "file": r.path,
                "window": f"{w['start']:.1f}-{w['end']:.1f} s",
                "emotion": w["label"],
                "confidence": w["confidence"],
            }
            for r in results
            for w in r.windows
        ]
        text += "\n\n" + format_table(window_rows, ["file", "window", "emotion", "confidence"])
    return text


def format_summary(summary: dict[str, Any]) -> str:
    """Accuracy, UAR and the confusion matrix (rows true, columns predicted) as text."""
    names = summary["class_names"]
    rows = [
        {"true \\ predicted": name, **dict(zip(names, counts, strict=True))}
        for name, counts in zip(names, summary["confusion"], strict=True)
    ]
    head = (
        f"RAVDESS-named files: {summary['n']}  accuracy {summary['accuracy']:.3f}  "
        f"UAR {summary['uar']:.3f}  macro F1 {summary['macro_f1']:.3f}"
    )
    return head + "\n\n" + format_table(rows, ["true \\ predicted", *names])


def write_results_csv(path: str | Path, results: Sequence[FileResult]) -> None:
    """One row per file: label, confidence, each probability, true label, windows, error.

    With speaker adaptation, also each file's ``speaker`` and ``adaptation`` (what its speaker got).
    """
    names = next((list(r.probabilities) for r in results if r.probabilities), [])
    columns = ["file", "label", "confidence", *(f"prob_{n}" for n in names)]
    columns += ["true_label", "duration", "n_windows", "error"]
    if any(r.adaptation is not None or r.speaker is not None for r in results):
        columns += ["speaker", "adaptation"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    for r in results:
        row = {"file": r.path, "label": r.label, "confidence": r.confidence, "true_label": r.true_label}
        row |= {f"prob_{n}": p for n, p in r.probabilities.items()}
        n_windows = len(r.windows) or (1 if r.label else 0)
        row |= {"duration": r.duration, "n_windows": n_windows, "error": r.error}
        if "adaptation" in columns:
            row |= {"speaker": r.speaker, "adaptation": r.adaptation}
        writer.writerow(row)
    write_text(path, buffer.getvalue())


def write_results_json(
    path: str | Path, results: Sequence[FileResult], summary: dict[str, Any] | None, model: dict[str, Any]
) -> None:
    """Every file's result (windows included), the model that answered and the RAVDESS summary.

    With speaker adaptation, each file also says its ``speaker`` and ``adaptation`` (what its speaker got).
    """
    speakers = any(r.adaptation is not None or r.speaker is not None for r in results)
    files = [r.as_dict(speakers) for r in results]
    write_json(path, {"model": model, "files": files, "summary": summary})
