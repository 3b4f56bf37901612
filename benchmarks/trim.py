"""Choose the default of preprocess.trim_top_db by measurement.

    python benchmarks/trim.py [--models svm,logreg,rf]

RAVDESS clips start with about 1 s of silence. For each threshold (off, 60, 40, 30 dB below
the peak) the sample at RAVDESS_DIR is featurized and the classical models are scored
under actor-kfold (speech and all). Writes reports/trim.md.
"""

from __future__ import annotations

import argparse
import copy
import os
from pathlib import Path

from components.evaluation.metrics import format_table
from components.runtime.files import write_text
from components.settings import load_params
from flows.evaluate import evaluate_data

ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = [None, 60.0, 40.0, 30.0]
RUNS = [{"protocol": "actor-kfold", "subset": "speech"}, {"protocol": "actor-kfold", "subset": "all"}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="svm,logreg,rf")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    data = Path(os.environ.get("RAVDESS_DIR", ROOT.parent / "shared" / "ravdess"))
    base = load_params(ROOT / "params.yaml")
    rows = []
    for threshold in THRESHOLDS:
        settings = copy.deepcopy(base)
        settings["preprocess"]["trim_top_db"] = threshold
        cache = ROOT / ".ser-cache" / f"trim-{threshold}"
        _, results = evaluate_data(data, cache, settings, args.models.split(","), RUNS, args.workers)
        for row in results:
            rows.append(
                {
                    "trim_top_db": "off" if threshold is None else threshold,
                    "model": row["model"],
                    "subset": row["subset"],
                    "accuracy": f"{row['accuracy']:.3f} ± {row['accuracy_sd']:.3f}",
                    "UAR": f"{row['uar']:.3f} ± {row['uar_sd']:.3f}",
                }
            )
    rows.sort(key=lambda r: (r["subset"], r["model"], str(r["trim_top_db"])))
    report = "\n".join(
        [
            "# Silence trimming: does cutting the leading/trailing silence help?",
            "",
            f"`python benchmarks/trim.py --models {args.models}` on {data.name}",
            "(actors 01-12, 2.39 s clips),",
            "actor-kfold (6 folds of 2 actors), mean ± sd over folds. Classical models on the features",
            "their params.yaml sections name (hand-made and/or eGeMAPS, which are computed on the",
            "natural-length signal after trimming).",
            "",
            format_table(rows, list(rows[0])),
            "",
        ]
    )
    write_text(ROOT / "reports" / "trim.md", report)
    print(report)


if __name__ == "__main__":
    main()
