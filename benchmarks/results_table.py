"""The README's results table, rendered from the pipeline's own metrics, never copied by hand.

    python benchmarks/results_table.py            # rewrite the README block and print it
    python benchmarks/results_table.py --print    # print it only
    python benchmarks/results_table.py --check    # exit 1 when the README block is out of date

Reads ``metrics/train.json`` (the train stage's rows: model × protocol × subset, accuracy, UAR
and weighted F1 mean and sd), ``metrics/wav2vec2.json`` when the wav2vec2 stage scored a model,
and ``metrics/ingest.json`` for the corpus the run used; ``reports/accuracy.json`` (written by
``benchmarks/accuracy.py``), when present, adds a second table: the real RAVDESS sample. It
replaces what lies between ``<!-- results:start -->`` and ``<!-- results:end -->`` in README.md.
Without metrics/train.json the block says how to produce it. The date is the day
metrics/train.json was written; ``--check`` compares everything but that date, so a fresh
checkout of unchanged metrics passes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"
COMMAND = "python benchmarks/results_table.py"
ACCURACY = ROOT / "reports" / "accuracy.json"  # benchmarks/accuracy.py's headline figures, committed
# speaker-independent protocols first; the leaky random split last, for comparison only
PROTOCOL_ORDER = {"actor-kfold": 0, "holdout": 1, "random": 9}
PROTOCOL_NAMES = {"random": "random (leaky)"}
SUBSET_ORDER = {"speech": 0, "all": 1, "song": 2}
DATE_PATTERN = re.compile(r"\(written \d{4}-\d{2}-\d{2}\)")
NO_METRICS = (
    "No results yet: run `make run` (the pipeline writes `metrics/train.json`), "
    f"then `{COMMAND}` to fill this table."
)


class ResultsTableError(Exception):
    """A README without the results markers, or a metrics file that cannot be read."""


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's content, or None when the file is absent."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ResultsTableError(f"{path} is not valid JSON ({err}); run `make run` again") from err


def corpus_line(ingest: dict[str, Any] | None) -> str:
    """Which corpus the run used, said honestly: the demo corpus is synthetic, not RAVDESS."""
    if ingest is None:
        return "an unrecorded corpus (no `metrics/ingest.json`)"
    source, n_files = str(ingest.get("source", "?")), ingest.get("n_files")
    clips = f"{n_files} clips" if n_files is not None else "clips uncounted"
    if source == "demo":
        return (
            f"the offline **demo corpus** ({clips}, synthesised; `ingest.source: demo`). "
            "Demo-corpus numbers are not RAVDESS numbers: they show the pipeline works, "
            "not how well it recognises human emotion"
        )
    if source == "zenodo":
        return f"RAVDESS from Zenodo ({clips}; `ingest.source: zenodo`)"
    return f"RAVDESS files from `{source}` ({clips})"


def cell(row: dict[str, Any] | None) -> str:
    """``accuracy ± sd / UAR`` (no sd for a single split), or a dash when not run."""
    if row is None:
        return "–"
    text = f"{row['accuracy']:.3f}"
    if row.get("accuracy_sd") is not None:
        text += f" ± {row['accuracy_sd']:.3f}"
    return f"{text} / {row['uar']:.3f}"


def primary_metric(train: dict[str, Any]) -> str:
    """The metric the train stage picked the best model by (the key beside ``model`` in ``best``)."""
    keys = [key for key in train.get("best", {}) if key not in ("model", "protocol", "subset")]
    return keys[0] if keys else "uar"


def primary_run(train: dict[str, Any], runs: list[tuple[str, str]]) -> tuple[str, str]:
    """The protocol × subset the best model was chosen on: where its row carries the best score."""
    best, metric = train.get("best", {}), primary_metric(train)
    for run in runs:
        for row in train["results"]:
            same = (row["protocol"], row["subset"]) == run and row["model"] == best.get("model")
            if same and abs(row[metric] - best.get(metric, float("nan"))) < 5e-5:
                return run
    return runs[0]


def render_table(rows: list[dict[str, Any]], sort_run: tuple[str, str], metric: str) -> list[str]:
    """A markdown table: one row per model, one column per protocol × subset, best cell in bold."""
    runs = sorted(
        {(r["protocol"], r["subset"]) for r in rows},
        key=lambda run: (PROTOCOL_ORDER.get(run[0], 5), run[0], SUBSET_ORDER.get(run[1], 5), run[1]),
    )
    by_key = {(r["model"], r["protocol"], r["subset"]): r for r in rows}
    models = sorted(
        {r["model"] for r in rows},
        key=lambda m: (-(by_key.get((m, *sort_run)) or {}).get(metric, -1.0), m),
    )
    best = {
        run: max((r for r in rows if (r["protocol"], r["subset"]) == run), key=lambda r: r[metric])
        for run in runs
    }
    header = ["model"] + [f"{PROTOCOL_NAMES.get(p, p)}, {s}" for p, s in runs]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in models:
        cells = []
        for run in runs:
            row = by_key.get((model, *run))
            text = cell(row)
            cells.append(f"**{text}**" if row is best[run] else text)
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def accuracy_section(accuracy: dict[str, Any] | None) -> list[str]:
    """The real-sample table from reports/accuracy.json, without speaker normalisation (the setting
    models are registered under); no lines when the file is absent or holds no such result."""
    rows = [r for r in (accuracy or {}).get("results", []) if not r.get("norm")]
    if not rows:
        return []
    commands = ", ".join(f"`{command}`" for command in accuracy.get("commands", [])) or "unrecorded commands"
    return [
        "",
        f"On the **real RAVDESS sample**: {accuracy.get('data', 'not described')}. Measured by {commands} "
        "and rendered from `reports/accuracy.json`; speaker-normalised runs, per-group accuracy, learning "
        "curves and costs are in [reports/accuracy.md](reports/accuracy.md). Cells: accuracy ± sd over "
        "folds / UAR; rows sorted by UAR on actor-kfold, all; bold: the best UAR of each column.",
        "",
        *render_table(rows, ("actor-kfold", "all"), "uar"),
    ]


def render(
    train: dict[str, Any] | None,
    ingest: dict[str, Any] | None = None,
    wav2vec2: dict[str, Any] | None = None,
    date: str = "unknown date",
    accuracy: dict[str, Any] | None = None,
) -> str:
    """The text between the README markers (without them), from the metrics files' contents.

    Args:
        train: metrics/train.json, or None when the pipeline has not run.
        ingest: metrics/ingest.json (the corpus), if present.
        wav2vec2: metrics/wav2vec2.json, if present; its rows join the table when it scored.
        date: The day metrics/train.json was written (YYYY-MM-DD).
        accuracy: reports/accuracy.json (the real RAVDESS sample), if present: a second table.
    """
    if train is None or not train.get("results"):
        return "\n".join([NO_METRICS, *accuracy_section(accuracy)])
    rows = list(train["results"])
    skipped = None
    if wav2vec2 is not None:
        if str(wav2vec2.get("status", "")).startswith("ok"):
            rows += wav2vec2.get("results", [])
        else:
            skipped = str(wav2vec2.get("status"))
    metric = primary_metric(train)
    runs = sorted({(r["protocol"], r["subset"]) for r in train["results"]})
    sort_run = primary_run(train, runs)
    sources = "`metrics/train.json`" + (" and `metrics/wav2vec2.json`" if wav2vec2 is not None else "")
    profile = train.get("profile", "full")
    folds = sorted({r["n_folds"] for r in train["results"] if r.get("n_folds")})
    trimmed = (
        f" with the **quick profile** (`train.profile: quick`: {', '.join(map(str, folds))} folds, "
        "trimmed epochs and trees; every model under every run: `dvc exp run -S train.profile=full`)"
        if profile == "quick"
        else ""
    )
    lines = [
        f"Produced by `make run` (`dvc repro`){trimmed} on {corpus_line(ingest)}. "
        f"Rendered by `{COMMAND}` from {sources} (written {date}).",
        "",
        f"Cells: accuracy ± sd over folds / UAR; chance is 0.125. Rows sorted by {metric.upper()} on "
        f"{PROTOCOL_NAMES.get(sort_run[0], sort_run[0])}, {sort_run[1]}, the run the champion is chosen on; "
        "bold: the best UAR of each column.",
        "",
        *render_table(rows, sort_run, metric),
    ]
    best, registry = train.get("best", {}), train.get("registry", {})
    if best:
        decision = f"best: **{best.get('model')}**"
        if registry.get("version") is not None:
            verdict = "promoted to `champion`" if registry.get("promoted") else "not promoted"
            decision += (
                f", registered as version {registry['version']}, {verdict} ({registry.get('reason', '')})"
            )
        lines += ["", decision + "."]
    if skipped:
        lines += ["", f"wav2vec2: {skipped}"]
    return "\n".join([*lines, *accuracy_section(accuracy)])


def replace_block(readme: str, block: str) -> str:
    """The README with the text between the markers replaced by ``block``."""
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        raise ResultsTableError(f"README has no `{START}` ... `{END}` block to fill")
    return readme[: start + len(START)] + "\n" + block + "\n" + readme[end:]


def current_block(readme: str) -> str:
    """The text between the markers, as :func:`replace_block` writes it."""
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        raise ResultsTableError(f"README has no `{START}` ... `{END}` block to check")
    return readme[start + len(START) : end].strip("\n")


def written_date(path: Path) -> str:
    """The UTC day a file was last written."""
    return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).strftime("%Y-%m-%d")


def render_files(metrics_dir: Path, accuracy_path: Path = ACCURACY) -> str:
    """The block for the metrics files in ``metrics_dir`` and the real-sample figures in ``accuracy_path``."""
    train_path = metrics_dir / "train.json"
    train = read_json(train_path)
    date = written_date(train_path) if train is not None else "unknown date"
    ingest, wav2vec2 = read_json(metrics_dir / "ingest.json"), read_json(metrics_dir / "wav2vec2.json")
    return render(train, ingest, wav2vec2, date, read_json(accuracy_path))


def without_date(text: str) -> str:
    return DATE_PATTERN.sub("(written …)", text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metrics", type=Path, default=ROOT / "metrics", help="folder of the metrics files")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--accuracy", type=Path, default=ACCURACY, help="benchmarks/accuracy.py's figures")
    parser.add_argument("--print", action="store_true", help="print the block, do not write the README")
    parser.add_argument("--check", action="store_true", help="exit 1 when the README block is out of date")
    args = parser.parse_args(argv)
    try:
        block = render_files(args.metrics, args.accuracy)
        readme = args.readme.read_text()
        if args.check:
            if without_date(current_block(readme)) != without_date(block):
                print(f"{args.readme}: the results table differs from the metrics; run `{COMMAND}`")
                return 1
            print(f"{args.readme}: the results table matches the metrics")
            return 0
        print(block)
        if not args.print:
            args.readme.write_text(replace_block(readme, block))
    except ResultsTableError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
