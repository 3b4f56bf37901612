"""Classification metrics, their summary over folds, a confusion-matrix figure and a results table.

Labels are RAVDESS emotion codes (1-8), or another corpus's native codes with their names;
per-class results are keyed by emotion name. UAR
(unweighted average recall, sklearn's balanced accuracy) is the headline metric of speech
emotion recognition because it does not reward predicting the commonest class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from components.data.ravdess import EMOTIONS
from components.errors import SerError

SCALAR_METRICS: tuple[str, ...] = ("accuracy", "uar", "macro_f1", "weighted_f1")
_LABEL_BOX = {"facecolor": "white", "edgecolor": "none", "pad": 1.0}  # a value stays legible over a line


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ratio that is 0 where the denominator is 0 (sklearn's ``zero_division=0``)."""
    out = np.zeros(len(numerator), dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def compute_metrics(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    classes: Sequence[int] | None = None,
    names: Mapping[int, str] | None = None,
) -> dict:
    """Score predicted emotion codes against the true ones.

    Precision, recall or F1 that would divide by zero count as 0, silently. UAR averages the
    recall of the classes that occur in ``y_true`` (as ``balanced_accuracy_score`` does); the
    macro F1 averages the classes that occur in ``y_true`` or ``y_pred`` (as ``f1_score`` does).

    Args:
        y_true: True emotion codes.
        y_pred: Predicted emotion codes, same length.
        classes: The emotion codes of the confusion matrix, in order; by default the sorted codes
            found in either array.
        names: Code → class name; by default RAVDESS's emotions (another corpus scored on its
            native labels passes its own, e.g. EmoDB's 7).

    Returns:
        ``n``, ``accuracy``, ``uar``, ``macro_f1``, ``weighted_f1`` (floats), ``per_class``
        (``{name: {precision, recall, f1, support}}``), ``confusion`` (list of lists, rows are
        true classes, columns predicted), ``classes`` (codes) and ``class_names``.

    Raises:
        SerError: Empty or unequal inputs, a code that is not an emotion, or a label missing
            from ``classes``.
    """
    truth, pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if len(truth) == 0 or len(truth) != len(pred):
        raise SerError(
            f"need as many predictions as true labels, at least one: got {len(pred)} and {len(truth)}"
        )
    found = sorted({int(c) for c in np.concatenate([truth, pred])})
    codes = found if classes is None else [int(c) for c in classes]
    names = EMOTIONS if names is None else names
    unknown = sorted(set(codes) - set(names))
    if unknown:
        known = "1-8" if names is EMOTIONS else ", ".join(map(str, sorted(names)))
        raise SerError(f"labels {unknown} are not emotion codes ({known}); map class indices back to codes")
    outside = sorted(set(found) - set(codes))
    if outside:
        raise SerError(f"labels {outside} occur but are not in classes {codes}")
    index = {code: i for i, code in enumerate(codes)}
    confusion = np.zeros((len(codes), len(codes)), dtype=np.int64)
    np.add.at(confusion, ([index[int(c)] for c in truth], [index[int(c)] for c in pred]), 1)

    hits, support, predicted = np.diag(confusion), confusion.sum(axis=1), confusion.sum(axis=0)
    precision, recall = _ratio(hits, predicted), _ratio(hits, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    class_names = [names[code] for code in codes]
    return {
        "n": len(truth),
        "accuracy": float(hits.sum() / len(truth)),
        "uar": float(recall[support > 0].mean()),
        "macro_f1": float(f1[(support > 0) | (predicted > 0)].mean()),
        "weighted_f1": float((f1 * support).sum() / support.sum()),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support, strict=True)
        },
        "confusion": confusion.tolist(),
        "classes": codes,
        "class_names": class_names,
    }


def summarize_folds(per_fold: list[dict]) -> dict:
    """Mean and standard deviation of each scalar metric over folds, and the pooled confusion.

    The standard deviation is the *sample* one (``ddof=1``), the spread one would expect
    between folds; it is NaN for a single fold.

    Args:
        per_fold: Results of :func:`compute_metrics`, one per fold, over the same classes.

    Returns:
        ``n_folds``, ``{metric}_mean`` and ``{metric}_sd`` for accuracy, uar, macro_f1 and
        weighted_f1, ``confusion`` (the sum of the folds' matrices), ``classes`` and
        ``class_names``.

    Raises:
        SerError: No folds, or folds scored over different classes.
    """
    if not per_fold:
        raise SerError("no folds to summarise")
    classes = per_fold[0]["classes"]
    if any(fold["classes"] != classes for fold in per_fold):
        raise SerError("folds were scored over different classes; pass the same classes= to each")
    summary: dict = {"n_folds": len(per_fold)}
    for metric in SCALAR_METRICS:
        values = np.array([fold[metric] for fold in per_fold], dtype=np.float64)
        summary[f"{metric}_mean"] = float(values.mean())
        summary[f"{metric}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    summary["confusion"] = np.sum([fold["confusion"] for fold in per_fold], axis=0).tolist()
    summary["classes"] = list(classes)
    summary["class_names"] = list(per_fold[0]["class_names"])
    return summary


def normalize_confusion(matrix: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
    """Each row as shares of its true class (rows sum to 1; a class with no clips stays all 0).

    The view that suits imbalanced classes and UAR: the diagonal is each class's recall.
    """
    counts = np.asarray(matrix, dtype=np.float64)
    row_sums = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, row_sums, out=np.zeros(counts.shape), where=row_sums > 0)


def plot_confusion(
    matrix: Sequence[Sequence[int]] | np.ndarray,
    class_names: Sequence[str],
    title: str,
    normalized: bool = False,
) -> Figure:
    """Draw a confusion matrix: colours are shares of each true class, cells show counts.

    With ``normalized`` the cells show the shares too (the diagonal is each class's recall).

    The figure is made without pyplot, so no global backend is chosen and nothing is kept
    open; save it with ``fig.savefig(...)``.

    Args:
        matrix: Square counts, rows are true classes and columns predicted ones.
        class_names: One name per row.
        title: The figure's title.

    Raises:
        SerError: The matrix is not square or does not match the names.
    """
    counts = np.asarray(matrix)
    n = len(class_names)
    if counts.shape != (n, n):
        raise SerError(f"confusion matrix of shape {counts.shape} does not match {n} class names")
    shares = normalize_confusion(counts)

    fig = Figure(figsize=(1.0 + 0.7 * n, 0.6 + 0.7 * n), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for (row, col), count in np.ndenumerate(counts):
        colour = "white" if shares[row, col] > 0.5 else "black"
        text = f"{shares[row, col]:.2f}" if normalized else str(int(count))
        ax.text(col, row, text, ha="center", va="center", color=colour, fontsize=9)
    ax.set_xticks(range(n), labels=list(class_names), rotation=45, ha="right")
    ax.set_yticks(range(n), labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="share of the true class")
    return fig


def plot_recall(per_class: dict[str, dict[str, float]], title: str) -> Figure:
    """Per-class recall as horizontal bars, with the UAR (their mean) as a line.

    Args:
        per_class: ``compute_metrics``'s ``per_class`` (``{name: {"recall": ..., "support": ...}}``).
        title: The figure's title.
    """
    names = [name for name, values in per_class.items() if values["support"] > 0]
    recalls = [per_class[name]["recall"] for name in names]
    fig = Figure(figsize=(6.0, 0.8 + 0.35 * len(names)), layout="constrained")
    ax = fig.subplots()
    ax.barh(names, recalls, color="tab:blue")
    ax.invert_yaxis()  # first class on top, as in the confusion matrix
    if recalls:
        ax.axvline(float(np.mean(recalls)), color="tab:red", linestyle="--", label="UAR")
        ax.legend(loc="lower right")
    for i, recall in enumerate(recalls):
        ax.text(recall + 0.01, i, f"{recall:.2f}", va="center", fontsize=9, bbox=_LABEL_BOX)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("recall")
    ax.set_title(title)
    return fig


def plot_learning_curves(histories: dict[str, dict[str, list[float]]], title: str) -> Figure:
    """Training loss and validation recall per epoch, one line per fold.

    Args:
        histories: Fold name → the training loop's history (``train_loss``, ``val_recall`` ...).
        title: The figure's title.
    """
    fig = Figure(figsize=(9.0, 3.5), layout="constrained")
    loss_ax, recall_ax = fig.subplots(1, 2)
    for fold, history in histories.items():
        for ax, key in ((loss_ax, "train_loss"), (recall_ax, "val_recall")):
            values = history.get(key, [])
            ax.plot(range(1, len(values) + 1), values, marker=".", label=fold)
    for ax, label in ((loss_ax, "training loss"), (recall_ax, "validation recall (UAR)")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
    recall_ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig


def group_metrics(predictions: pd.DataFrame, column: str, classes: Sequence[int]) -> list[dict]:
    """Accuracy and UAR of pooled test predictions within each value of ``column``.

    Args:
        predictions: One row per test clip: ``true`` and ``pred`` emotion codes and ``column``.
        column: The grouping column, e.g. ``gender``, ``intensity``, ``statement``, ``vocal_channel``.
        classes: The emotion codes scored.

    Returns:
        One row per group: ``group``, ``n``, ``accuracy``, ``uar``.
    """
    rows = []
    for value, group in predictions.groupby(column, sort=True):
        scored = compute_metrics(group["true"], group["pred"], classes=classes)
        rows.append({"group": value, "n": scored["n"], "accuracy": scored["accuracy"], "uar": scored["uar"]})
    return rows


def _cell(value: object, digits: int) -> str:
    if isinstance(value, float | np.floating):
        return "n/a" if np.isnan(value) else f"{value:.{digits}f}"
    return "" if value is None else str(value)


def format_table(rows: list[dict], columns: Sequence[str], digits: int = 3) -> str:
    """A Markdown table that also reads as plain text (columns padded, numbers right-aligned).

    Args:
        rows: One dict per row; a missing key leaves the cell empty.
        columns: The keys to show, in order; they are also the headers.
        digits: Decimals of float cells; NaN shows as ``n/a``.

    Returns:
        The table, one line per row after the header and the alignment line, no final newline.
    """
    cells = [[_cell(row.get(column), digits) for column in columns] for row in rows]
    numeric = [
        bool(rows) and all(isinstance(row.get(c), int | float | np.number) for row in rows if c in row)
        for c in columns
    ]
    widths = [max([len(c), 3, *(len(line[i]) for line in cells)]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        padded = [
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w - 1) + ":" if num else "-" * w for w, num in zip(widths, numeric, strict=True)]
    return "\n".join([line(list(columns)), line(rule), *(line(values) for values in cells)])


def confusion_pairs(
    confusion: Sequence[Sequence[int]], classes: Sequence[int]
) -> tuple[list[int], list[int]]:
    """Expand a confusion matrix back into ``(y_true, y_pred)`` lists (for pooled reports and plots)."""
    y_true: list[int] = []
    y_pred: list[int] = []
    for i, row in enumerate(confusion):
        for j, count in enumerate(row):
            y_true += [classes[i]] * int(count)
            y_pred += [classes[j]] * int(count)
    return y_true, y_pred
