"""Accuracy of every model on the real RAVDESS sample, speaker-independent and leaky, with and without
per-speaker normalisation, plus what each model costs to train and to predict one clip.

    python benchmarks/accuracy.py [--models rf,svm,...] [--workers 2] [--speaker-norm off|on|both]

Reads RAVDESS_DIR (default ../shared/ravdess) and caches its features in .ser-cache/. Each
model × normalisation result is stored in .ser-cache/accuracy-results.json with the params
section that produced it, so several invocations (say, the slow deep models apart) build one
report; a stored result whose params section has changed since is left out. Writes
reports/accuracy.md, rendered from the stored results and reports/accuracy_explore.json (the
configurations tried on validation actors, by benchmarks/accuracy_explore.py), the deep models'
learning curves (reports/accuracy_learning_curves.png) and the headline figures in
reports/accuracy.json, from which benchmarks/results_table.py renders the README's real-sample table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import ROOT, add_common_args, write_report

from components.data import ravdess
from components.evaluation.evaluate import Evaluation, ModelSpec, pooled_predictions
from components.evaluation.metrics import format_table
from components.runtime.files import write_json
from components.settings import Settings, load_params
from flows.evaluate import evaluate_data

FEATURES = ROOT / ".ser-cache" / "ravdess-features"
STORE = ROOT / ".ser-cache" / "accuracy-results.json"
EXPLORE = ROOT / "reports" / "accuracy_explore.json"
DEEP_EXPLORE = ROOT / "reports" / "deep_explore.json"  # by the removed deep_explore.py
EXPLORATIONS = {  # reports/<name>.json of the removed exploration scripts: (what it asked, what came of it)
    "compare_explore": ("ComParE_2016 functionals", "they chose logreg_compare and ensemble_compare"),
    "fast_explore": (
        "Dropping eGeMAPS from the champion to halve its prediction time",
        "no eGeMAPS-free configuration matched ensemble_compare in all four settings; not adopted",
    ),
    "augment_explore": (
        "Speed perturbation (0.9/1.1) of the training actors, and test-time augmentation",
        "gains on speech only, and only with test-time augmentation (three times the prediction cost),\n"
        "none on speech + song; not adopted",
    ),
    "augment_more": (
        "Pitch shift (±1 semitone, tempo kept) or white noise (20 dB) copies of the training actors",
        "as with speed perturbation, gains on speech only and only with test-time augmentation; not adopted",
    ),
    "gender_explore": (
        "Per-gender feature standardisation with the true gender (its upper bound)",
        "no gain, so no gender classifier was built",
    ),
    "nap_explore": (
        "Nuisance attribute projection (the training speakers' mean directions projected out)",
        "small gains on speech, none on speech + song; not adopted",
    ),
    "segment_explore": (
        "eGeMAPS functionals of 2 or 3 consecutive parts of the trimmed utterance, added to the clip's",
        "no gain (+0.5 points at best, up to 5 lost); not adopted",
    ),
    "stack_explore": (
        "Stacking: a logistic regression on the members' out-of-fold (grouped by actor) log-probabilities",
        "worse than the soft vote at every regularisation; the vote stays",
    ),
}
TUNE = ROOT / "reports" / "tune.md"  # the removed benchmarks/tune.py (Optuna)
# The original project's accuracy under random 80/20, full-length clips (rf_handmade: its very forest)
ORIGINAL = {"rf": 0.74, "rf_handmade": 0.74, "cnn": 0.80, "cnn_lstm": 0.82, "cnn_gru": 0.83}
RUNS = [
    {"protocol": "actor-kfold", "subset": "speech"},
    {"protocol": "actor-kfold", "subset": "all"},
    {"protocol": "random", "subset": "all"},
]
GROUPS = ("gender", "intensity", "statement", "vocal_channel")  # per-group accuracy of pooled test clips
GROUP_COLUMNS = (  # (group, stored value, column of the per-group table)
    ("gender", "male", "male"),
    ("gender", "female", "female"),
    *(("intensity", str(code), name) for code, name in ravdess.INTENSITIES.items()),
    *(("statement", str(code), f'"{name}"') for code, name in ravdess.STATEMENTS.items()),
    *(("vocal_channel", str(code), name) for code, name in ravdess.VOCAL_CHANNELS.items()),
)
CURVES = "accuracy_learning_curves.png"  # beside the report: the deep models' learning curves
OLD_SAMPLE = "Measured on the earlier sample, speech cut to 2.39 s: not comparable with the tables above."
METRICS = ("accuracy", "uar", "weighted_f1")  # each stored as mean over folds and sd
N_TIMED_CLIPS = 20  # single-clip predictions timed per model (median reported)
# Quick scratch runs (classical models and one CNN variant, not kept as scripts) made before
# benchmarks/accuracy_explore.py existed; they printed test-fold accuracy beside validation
# accuracy, so they are counted and disclosed. The script reproduces the comparisons behind
# every choice on validation actors only.
N_SCRATCH_RUNS = 110


def run_models(models: list[str], settings: dict, norm: bool, workers: int, data: Path) -> list[dict]:
    """Evaluate ``models`` under every run with ``evaluate.speaker_norm = norm``; one stored row each."""
    norm_settings = {**settings, "evaluate": {**settings["evaluate"], "speaker_norm": norm}}
    runs = [(run["protocol"], run["subset"]) for run in RUNS]
    evaluations, _ = evaluate_data(
        data, FEATURES, Settings.model_validate(norm_settings), models, runs, workers
    )
    return [result_row(e, settings[e.model], norm) for e in evaluations]


def result_row(evaluation: Evaluation, section: dict, norm: bool) -> dict[str, Any]:
    """What the report needs of one evaluation: mean ± sd metrics, per-fold costs, the params section."""
    s, folds = evaluation.summary, evaluation.folds
    row = {"model": evaluation.model, "norm": norm}
    row |= {"protocol": evaluation.protocol, "subset": evaluation.subset}
    for key in METRICS:
        row[key], row[f"{key}_sd"] = float(s[f"{key}_mean"]), float(np.nan_to_num(s[f"{key}_sd"]))
    row["folds"] = len(folds)
    row["fold_accuracy"] = [float(f.metrics["accuracy"]) for f in folds]
    row["train_s"] = float(np.mean([f.train_seconds for f in folds]))
    row["batch_ms_per_clip"] = 1000 * sum(f.predict_seconds for f in folds) / sum(f.n_test for f in folds)
    speech = s.get("by_channel", {}).get("speech")
    if speech:  # subset all: the same models scored on their speech test clips alone
        row["speech_of_all"] = {
            key: float(np.nan_to_num(speech[key])) for key in ("accuracy_mean", "accuracy_sd", "uar_mean")
        }
    pooled = pooled_predictions(evaluation)
    if pooled is not None:  # test clips of every fold: accuracy per group (gender, intensity, ...)
        correct = pooled["true"].to_numpy() == pooled["pred"].to_numpy()
        row["groups"] = {
            group: {str(value): float(correct[pooled[group].to_numpy() == value].mean()) for value in values}
            for group in GROUPS
            if group in pooled
            for values in [sorted(pooled[group].unique(), key=str)]
        }
    histories = [f.history for f in folds if f.history]
    if histories:  # deep models: per-epoch learning curves of each fold
        row["history"] = histories
    row["section"] = section
    return row


def time_model(name: str, settings: dict, data: Path) -> dict[str, float]:
    """One fit on the training actors of the first actor-kfold fold (speech and song, one thread),
    then the raw-audio pyfunc's predictor on single 16 kHz clips of the test actors (one thread):
    read samples in, features and model out. Returns fit seconds, the median ms per clip and the load."""
    import soundfile as sf
    import torch
    from threadpoolctl import threadpool_limits

    from components.evaluation.evaluate import prepare_data
    from components.features.sets import extract_params
    from components.serving.pyfunc import EmotionPredictor

    spec = ModelSpec.from_params(name, settings[name])
    subset = prepare_data(spec, FEATURES, "all", speaker_norm=False)
    split, paths = timed_clips(subset.labels, settings["evaluate"], data)
    from components.evaluation.evaluate import fit_on_rows

    train = split.train if spec.early_stops else np.union1d(split.train, split.val)
    torch.set_num_threads(1)
    with threadpool_limits(1):
        started = time.perf_counter()
        model = fit_on_rows(spec, subset, train, split.val)
        fit_s = time.perf_counter() - started
        extract = extract_params(settings["preprocess"], settings["featurize"])
        info = {"model": name}
        predictor = EmotionPredictor(model, spec.stats_sets, spec.uses_logmel, extract, info, spec.sequence)
        signals = [sf.read(path, dtype="float32") for path in paths]
        predictor.predict_signals(signals[:1])  # warm: filterbanks, openSMILE, torch kernels
        times = []
        for signal in signals:
            started = time.perf_counter()
            predictor.predict_signals([signal])
            times.append(time.perf_counter() - started)
    load = os.getloadavg()[0]  # one-minute load average: how busy the machine was while timing
    return {"fit_s": fit_s, "predict_ms": 1000 * float(np.median(times)), "load": load}


def timed_clips(labels: Any, evaluate: dict, data: Path) -> tuple[Any, list[Path]]:
    """The first actor-kfold fold of ``labels`` (speech and song) and the files of the first
    N_TIMED_CLIPS clips of its test actors, whose single-clip predictions are timed."""
    from components.evaluation.protocols import make_splits

    split = make_splits(
        labels, "actor-kfold", n_folds=evaluate["n_folds"], n_val_actors=evaluate["n_val_actors"]
    )[0]
    folder = {1: "speech", 2: "song"}
    paths = [
        data / folder[int(row.vocal_channel)] / f"Actor_{int(row.actor):02d}" / f"{row.clip_id}.wav"
        for row in labels.iloc[split.test[:N_TIMED_CLIPS]].itertuples()
    ]
    return split, paths


def timed_fold(settings: dict, data: Path) -> str:
    """The clips behind the cost table, as :func:`time_model` picks them (the labels from the feature
    cache, the durations from the files): how many the 10 training actors have, and how long the
    timed test clips are."""
    import soundfile as sf

    from components.evaluation.dataset import load_dataset
    from components.evaluation.protocols import select_subset

    if not (FEATURES / "handmade.parquet").exists():
        return "clips not counted: no feature cache here"
    labels = select_subset(load_dataset(FEATURES, ["handmade"], False).labels, "all")
    split, paths = timed_clips(labels, settings["evaluate"], data)
    n_fit = len(split.train) + len(split.val)
    if not all(path.exists() for path in paths):
        return f"{n_fit} training clips; the timed clips' files are not here"
    clip_dur = float(np.mean([sf.info(path).duration for path in paths]))
    return f"{n_fit} training clips; the timed clips last {clip_dur:.2f} s on average before silence trimming"


def describe_data(data: Path) -> str:
    """What the sample holds, read off its files: the actors, clips per vocal channel and their
    durations (a channel whose clips all last the same is said to be cut to that length)."""
    import soundfile as sf

    durations: dict[int, list[float]] = {}
    actors, emotions, rates = set(), set(), set()
    for path in sorted(data.rglob("*")):
        if path.suffix.lower() not in ravdess.AUDIO_EXTENSIONS:
            continue
        labels, info = ravdess.parse_name(path), sf.info(path)
        durations.setdefault(labels.vocal_channel, []).append(info.duration)
        actors.add(labels.actor)
        emotions.add(labels.emotion)
        rates.add(info.samplerate)
    if not durations:
        return f"no RAVDESS clips under {data} (the sample is not on this machine)"
    parts = []
    for channel, durs in sorted(durations.items()):
        name, low, high = ravdess.VOCAL_CHANNELS[channel], min(durs), max(durs)
        if high - low < 0.01:
            parts.append(f"{len(durs)} {name}, each cut to its first {high:.2f} s")
        else:
            spread = f"{low:.2f}–{high:.2f} s, median {np.median(durs):.2f} s"
            parts.append(f"{len(durs)} {name} at full length, {spread}")
    ids = sorted(actors)
    contiguous = len(ids) > 1 and ids == list(range(ids[0], ids[-1] + 1))
    span = f"{ids[0]:02d}–{ids[-1]:02d}" if contiguous else ", ".join(f"{actor:02d}" for actor in ids)
    khz = ", ".join(f"{rate / 1000:g}" for rate in sorted(rates))
    total = sum(len(durs) for durs in durations.values())
    return f"actors {span}, {total} clips ({'; '.join(parts)}) at {khz} kHz; {len(emotions)} classes"


def group_rows(rows: list[dict]) -> list[dict[str, Any]]:
    """Actor-kfold accuracy of each model's pooled test clips per group: gender, intensity,
    statement, and (subset all) vocal channel; – : no such clips, or not stored for that run."""
    out = []
    for r in rows:
        if r["protocol"] != "actor-kfold" or "groups" not in r:
            continue
        line = {"model": r["model"], "subset": r["subset"], "speaker norm": "yes" if r["norm"] else "no"}
        line["all clips"] = f"{r['accuracy']:.3f}"
        for group, value, column in GROUP_COLUMNS:
            found = r["groups"].get(group, {}).get(value)
            shown = found is not None and (group != "vocal_channel" or r["subset"] == "all")
            line[column] = f"{found:.3f}" if shown else "–"
        out.append(line)
    return out


def mean_curve(histories: list[dict], metric: str) -> np.ndarray:
    """Per epoch, the mean of ``metric`` over the folds that trained that long (early stopping
    ends folds at different epochs)."""
    curves = [h[metric] for h in histories if h.get(metric)]
    if not curves:
        return np.array([])
    n_epochs = max(len(curve) for curve in curves)
    return np.array([np.mean([c[e] for c in curves if len(c) > e]) for e in range(n_epochs)])


def curve_rows(rows: list[dict]) -> list[dict[str, Any]]:
    """Per deep model and run: epochs trained per fold and its validation recall at the best epoch."""
    out = []
    for r in rows:
        histories = r.get("history") or []
        if not histories:
            continue
        epochs = [len(h.get("train_loss", [])) for h in histories]
        best = [max(h["val_recall"]) for h in histories if h.get("val_recall")]
        out.append(
            {
                "model": r["model"],
                "run": f"{r['protocol']} {r['subset']}" + (" (norm)" if r["norm"] else ""),
                "folds": len(histories),
                "epochs per fold": f"{np.mean(epochs):.0f} ({min(epochs)}–{max(epochs)})",
                "best val recall": cell(float(np.mean(best)), float(np.std(best)) if len(best) > 1 else None)
                if best
                else "–",
            }
        )
    return out


def plot_learning_curves(rows: list[dict], path: Path) -> bool:
    """Draw the deep models' learning curves (mean over folds of validation recall and training loss
    per epoch; one line per model, one column per run) to ``path``; False, and nothing written, when
    no stored row has a training history."""
    with_history = [r for r in rows if r.get("history")]
    if not with_history:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from components.runtime.files import atomic_path

    order = [(run["protocol"], run["subset"]) for run in RUNS]
    runs = sorted(
        {(r["protocol"], r["subset"], r["norm"]) for r in with_history},
        key=lambda run: (order.index(run[:2]) if run[:2] in order else len(order), run[2]),
    )
    fig, axes = plt.subplots(2, len(runs), figsize=(4.5 * len(runs), 6.5), squeeze=False)
    for column, (protocol, subset, norm) in enumerate(runs):
        for r in sorted(with_history, key=lambda r: r["model"]):
            if (r["protocol"], r["subset"], r["norm"]) != (protocol, subset, norm):
                continue
            for line, metric in enumerate(("val_recall", "train_loss")):
                curve = mean_curve(r["history"], metric)
                axes[line, column].plot(np.arange(1, len(curve) + 1), curve, label=r["model"])
        title = f"{protocol} {subset}" + (", speaker norm" if norm else "")
        axes[0, column].set_title(f"{title} (mean of folds)", fontsize=9)
        axes[0, column].set_ylabel("validation recall (UAR)")
        axes[1, column].set_ylabel("training loss")
        axes[1, column].set_xlabel("epoch")
        axes[0, column].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return True


def load_note(timed: list[dict]) -> str:
    """How busy the machine was while the cost table was measured (a shared machine inflates it)."""
    loads = [t["load"] for t in timed if "load" in t]
    if not loads:
        return "The machine was shared and busy (load not recorded), which inflates single-thread latency."
    unrecorded = " (some rows: not recorded)" if len(loads) < len(timed) else ""
    span = f"{min(loads):.1f}–{max(loads):.1f}"
    return f"One-minute load average on the 2 cores after each timing: {span}{unrecorded}."


def load_store() -> dict[str, Any]:
    return json.loads(STORE.read_text()) if STORE.exists() else {"results": {}, "timing": {}, "commands": []}


def save(change: Any) -> None:
    """Apply ``change`` to the stored results as they are on disk now (another run may have added some)."""
    store = load_store()
    change(store)
    STORE.write_text(json.dumps(store, indent=1))


def key(row: dict) -> str:
    return f"{row['model']}|{'norm' if row['norm'] else 'plain'}|{row['protocol']}|{row['subset']}"


def cell(mean: float, sd: float | None) -> str:
    return f"{mean:.3f}" + (f" ± {sd:.3f}" if sd else "")


def current(store: dict, settings: dict) -> list[dict]:
    """Stored rows whose params section is still the one in params.yaml."""
    return [row for row in store["results"].values() if settings.get(row["model"]) == row["section"]]


def deltas(rows: list[dict], settings: dict) -> list[str]:
    """Measured differences between stored results (accuracy, mean over folds), one line each."""
    by = {(r["model"], r["norm"], r["protocol"], r["subset"]): r for r in rows}
    lines = []

    def delta(a: tuple, b: tuple, what: str) -> None:
        if a in by and b in by:
            runs = f"{a[2]} {a[3]}" + (", speaker-normalised" if a[1] and a[1] == b[1] else "")
            lines.append(
                f"- {what}, {runs}: {by[b]['accuracy']:.3f} → {by[a]['accuracy']:.3f} "
                f"(**{by[a]['accuracy'] - by[b]['accuracy']:+.3f}**)"
            )

    models = sorted({r["model"] for r in rows})
    for run in RUNS:
        p, s = run["protocol"], run["subset"]
        for model in models:
            delta((model, True, p, s), (model, False, p, s), f"per-speaker normalisation, {model}")
    for model in models:
        section = settings.get(model, {})
        if section.get("kind") != "ensemble":
            continue
        members = section.get("members", {})
        for norm in (False, True):
            for run in RUNS:
                p, s = run["protocol"], run["subset"]
                alone = [by[(m, norm, p, s)] for m in members if (m, norm, p, s) in by]
                if len(alone) == len(members):
                    best = max(alone, key=lambda r: r["accuracy"])
                    what = f"{model} over the best single model of its members' families"
                    delta((model, norm, p, s), (best["model"], norm, p, s), what)
    return lines


def features_of(spec: ModelSpec) -> str:
    """The sets a model reads, its sequence last: ``handmade+whisper_tiny_en_frames``."""
    return "+".join([*spec.stats_sets, *([spec.sequence] if spec.uses_logmel else [])])


def render(store: dict, settings: dict, data: Path) -> str:
    rows = current(store, settings)
    order = [(r["protocol"], r["subset"]) for r in RUNS]
    rows.sort(key=lambda r: (order.index((r["protocol"], r["subset"])), r["norm"], -r["accuracy"]))
    timing = store["timing"]
    table = [
        {
            "model": r["model"],
            "protocol": r["protocol"],
            "subset": r["subset"],
            "speaker norm": "yes" if r["norm"] else "no",
            "folds": r["folds"],
            "accuracy": cell(r["accuracy"], r["accuracy_sd"] if r["folds"] > 1 else None),
            "UAR": cell(r["uar"], r["uar_sd"] if r["folds"] > 1 else None),
            "weighted F1": cell(r["weighted_f1"], r["weighted_f1_sd"] if r["folds"] > 1 else None),
            "train s/fold": round(r["train_s"], 1),
            "original": ORIGINAL.get(r["model"], "") if r["protocol"] == "random" else "",
        }
        for r in rows
    ]
    cost = [
        {
            "model": name,
            "kind": settings[name].get("kind", name),
            "features": features_of(ModelSpec.from_params(name, settings[name])),
            "fit s (1 thread)": round(t["fit_s"], 1),
            "predict ms/clip (1 thread)": round(t["predict_ms"], 1),
        }
        for name, t in sorted(timing.items(), key=lambda item: item[1]["predict_ms"])
        if name in settings and settings[name] == t["section"]
    ]
    summary = summary_table(rows, settings)
    speech = speech_rows(rows)
    groups = group_rows(rows)
    timed = [t for name, t in timing.items() if name in settings and settings[name] == t["section"]]
    commands = list(dict.fromkeys(r.get("command", "(unrecorded)") for r in [*rows, *timed]))
    explore = json.loads(EXPLORE.read_text()) if EXPLORE.exists() else None
    n_final = len({(r["model"], r["norm"]) for r in rows})
    lines = [
        "# Accuracy on the real RAVDESS sample",
        "",
        "Produced by (each result keeps the command that made it; these are the ones behind this report):",
        "",
        *[f"    {command}" for command in commands],
        "",
        f"on {data.name}: {describe_data(data)}. "
        f"{os.cpu_count()} CPUs (shared), Python {platform.python_version()}.",
        "",
        "- **actor-kfold** (lead with this): 6 folds of 2 held-out actors; early stopping and every",
        "  choice on 2 validation actors taken from the training folds. Mean ± sd over folds.",
        "- **random**: the original project's stratified 80/20 split (seed 42). It leaks speakers:",
        "  every test actor, and the twin repetition of most test clips, is in training.",
        "- **speaker norm** (`evaluate.speaker_norm`): scalar features z-scored per actor over that",
        "  actor's clips, and a deep model's input sequence per channel over the actor's frames that",
        "  are not padding (no labels; test actors included, i.e. unsupervised adaptation). A recorded",
        "  option: it needs many clips of a new speaker at prediction time, so such models are never",
        "  registered.",
        "- *original*: the original project's accuracy under random, on full-length clips.",
        "- *train s/fold*: mean seconds to fit one fold in the evaluation (2 worker processes, one",
        "  thread each, on a shared machine).",
        "",
        "## Summary",
        "",
        "Accuracy / UAR (actor-kfold: mean ± sd of accuracy over folds), sorted by actor-kfold all",
        "without speaker normalisation, the setting the pipeline registers models under; – : not run.",
        "",
        format_table(summary, list(summary[0])) if summary else "(no results yet)",
        "",
        "## Speech, scored on models trained on speech and song",
        "",
        "The registered model is trained on speech and song. Its speech accuracy is read off the",
        "actor-kfold all runs (the same fitted models, scored on the held-out actors' speech clips",
        "only) and set beside the models trained and tested on speech alone; – : not stored for",
        "that run (results from before this breakdown existed).",
        "",
        format_table(speech, ["model", "speaker norm", "trained on speech", "trained on all"])
        if speech
        else "(no results yet)",
        "",
        "## Every result",
        "",
        format_table(table, list(table[0])) if table else "(no results yet)",
        "",
        "## Accuracy per group",
        "",
        "Actor-kfold: accuracy of the test clips of every fold pooled, per speaker gender, intensity,",
        "sentence and (speech + song) vocal channel; – : no such clips in the subset, or not stored.",
        "",
        format_table(groups, list(groups[0])) if groups else "(not stored for these results)",
        "",
        *curves_section(rows),
        "## Cost of each model",
        "",
        "One fit on the 10 training actors of fold 1 (speech and song) on one thread, and",
        "the raw-audio predictor (the object the registered pyfunc wraps) on single 16 kHz clips of",
        "the two test actors on one thread: features from samples, then the model; median of",
        f"{N_TIMED_CLIPS} clips ({timed_fold(settings, data)}). {load_note(timed)}",
        "openSMILE is most of it (reports/fast_explore.md: eGeMAPS about 13 ms and ComParE about 10 ms",
        "per second of audio, against a few ms for the hand-made set and the log-mel).",
        "",
        format_table(cost, list(cost[0])) if cost else "(not timed)",
        "",
        "## What helped, what did not",
        "",
        "Measured here (accuracy, mean over folds; the same folds for both sides):",
        "",
        *deltas(rows, settings),
        "",
    ]
    if explore:
        lines += [
            f"Explored before these runs on validation actors only (`{explore['command']}`, "
            f"reports/accuracy_explore.md): {explore['n_configs']} configurations. Choices were made "
            "on the validation actors' accuracy (pooled over the 6 training folds), never on a test fold.",
            OLD_SAMPLE,
            "",
            *[f"- {line}" for line in explore["findings"]],
            "",
        ]
    n_explored = explore["n_configs"] if explore else 0
    deep = json.loads(DEEP_EXPLORE.read_text()) if DEEP_EXPLORE.exists() else None
    if deep:
        scores = {key: float(np.mean(list(e["folds"].values()))) for key, e in deep["results"].items()}
        n_explored += len(scores)
        lines += [
            "Deep-model options, on validation actors only (benchmarks/deep_explore.py,",
            f"reports/deep_explore.md): {len(scores)} configurations. None beat the plain CNN with the same",
            "budget (40 epochs, patience 8) by more than fold noise; params.yaml keeps the plain nets.",
            OLD_SAMPLE,
            "",
            *[
                f"- {key.split('/')[1]} over base_long, {key.split('/')[0]}: "
                f"{score - scores[key.split('/')[0] + '/base_long']:+.3f}"
                for key, score in sorted(scores.items())
                if key.split("/")[1] not in ("base", "base_long")
                and key.split("/")[0] + "/base_long" in scores
            ],
            "",
        ]
    for name, (title, outcome) in EXPLORATIONS.items():
        path = ROOT / "reports" / f"{name}.json"
        if path.exists():
            found = json.loads(path.read_text())
            n_explored += found["n_configs"]
            lines += [
                f"{title}, on validation actors only (`{found['command']}`, reports/{name}.md):",
                f"{found['n_configs']} configurations; {outcome}. {OLD_SAMPLE}",
                "",
                *[f"- {line}" for line in found["findings"]],
                "",
            ]
    harness = harness_lines()
    n_explored += sum(n for n, _ in harness)
    for _, text in harness:
        lines += text
    tune = TUNE.read_text() if TUNE.exists() else ""
    trials, best = re.search(r"(\d+) trials", tune), re.search(r"^Best: (.*)$", tune, re.MULTILINE)
    if trials and best:
        n_explored += int(trials[1])
        lines += [
            f"Optuna search of ensemble_compare's settings (validation actors, reports/tune.md): {trials[1]}",
            f"trials. Best {best[1]} Within fold noise for a best-of-{trials[1]}; not adopted. {OLD_SAMPLE}",
            "",
        ]
    lines += [
        f"**Configurations tried: {n_explored + n_final + N_SCRATCH_RUNS}** ({n_explored} explored on "
        f"validation actors, {n_final} model × normalisation settings in the table above, and "
        f"{N_SCRATCH_RUNS} earlier scratch runs, mostly the same configurations, which printed test-fold",
        "accuracy beside validation accuracy; among them a CNN on per-speaker normalised log-mel, which",
        "did not beat normalising its statistics branch only, and log-mel functionals normalised per",
        "speaker with the rest, which only an in-model (unnormalised) version could serve).",
        "",
    ]
    return "\n".join(lines)


def harness_lines() -> list[tuple[int, list[str]]]:
    """For each question of ``experiments/configs/`` with a report: its configuration count and what it
    found, each configuration's primary metric on validation actors against the config's baseline."""
    found = []
    for config in sorted((ROOT / "experiments" / "configs").glob("*.yaml")):
        path = ROOT / "reports" / f"{config.stem}.json"
        if not path.exists():
            continue
        report = json.loads(path.read_text())
        metric, rows = report["primary_metric"], report["rows"]
        plain = {(r["subset"], r["model"]): r[metric] for r in rows if "+speaker_norm" not in r["model"]}
        findings = []
        for r in sorted(rows, key=lambda r: (r["subset"], -r[metric])):
            name = r["model"].removesuffix("+speaker_norm")
            # a normalised row against the same configuration plain, a plain one against the baseline
            ref, against = (name, "plain") if name != r["model"] else (report["baseline"], report["baseline"])
            delta = r[metric] - plain[(r["subset"], ref)] if (r["subset"], ref) in plain else None
            findings.append(
                f"- {r['model']}, {r['subset']}: {metric} {r[metric]:.3f} ± {r[f'{metric}_sd']:.3f}"
                + (f" ({delta:+.3f} vs {against})" if delta is not None and ref != r["model"] else "")
            )
        text = [
            f"{report['question'][:1].upper()}{report['question'][1:]}? With the experiment harness, on "
            f"validation actors only (`{report['command']}`, reports/{config.stem}.md): "
            f"{len(rows)} configurations.",
            "",
            *findings,
            "",
        ]
        found.append((len(rows), text))
    return found


def headline(rows: list[dict], sample: str) -> dict[str, Any]:
    """The report's mean ± sd metrics, for the README's real-sample table (benchmarks/results_table.py
    reads reports/accuracy.json): no per-fold figures, histories or group breakdowns. A single split
    has no sd."""
    fields = ("model", "norm", "protocol", "subset", "folds", "accuracy", "uar", "weighted_f1", "train_s")
    results = []
    for r in sorted(rows, key=key):
        spread = {f"{metric}_sd": r[f"{metric}_sd"] if r["folds"] > 1 else None for metric in METRICS}
        results.append({field: r[field] for field in fields} | spread)
    commands = sorted({r.get("command", "(unrecorded)") for r in rows})
    return {"data": sample, "commands": commands, "results": results}


def curves_section(rows: list[dict]) -> list[str]:
    """The learning-curves section, when some stored row has a training history (else nothing)."""
    table = curve_rows(rows)
    if not table:
        return []
    return [
        "## Learning curves of the deep models",
        "",
        f"[{CURVES}]({CURVES}): per epoch, the mean over folds of the validation actors' recall (UAR,",
        "what early stopping watches) and of the training loss; a fold that stopped early leaves the mean.",
        "Best val recall: mean ± sd over folds of each fold's best epoch.",
        "",
        format_table(table, list(table[0])),
        "",
    ]


def speech_rows(rows: list[dict]) -> list[dict[str, str]]:
    """Per model and normalisation: actor-kfold speech accuracy trained on speech vs on speech + song."""
    by = {(r["model"], r["norm"], r["subset"]): r for r in rows if r["protocol"] == "actor-kfold"}
    out = []
    for model, norm in sorted({(m, n) for m, n, s in by if s == "all" and "speech_of_all" in by[(m, n, s)]}):
        alone, mixed = by.get((model, norm, "speech")), by[(model, norm, "all")]["speech_of_all"]
        out.append(
            {
                "model": model,
                "speaker norm": "yes" if norm else "no",
                "trained on speech": cell(alone["accuracy"], alone["accuracy_sd"]) + f" / {alone['uar']:.3f}"
                if alone
                else "–",
                "trained on all": cell(mixed["accuracy_mean"], mixed["accuracy_sd"])
                + f" / {mixed['uar_mean']:.3f}",
            }
        )
    return out


def summary_table(rows: list[dict], settings: dict) -> list[dict[str, str]]:
    """One row per model: each run without and with speaker normalisation side by side."""
    by = {(r["model"], r["norm"], r["protocol"], r["subset"]): r for r in rows}
    names = sorted({r["model"] for r in rows})
    plain_all = {
        n: by[(n, False, "actor-kfold", "all")]["accuracy"]
        for n in names
        if (n, False, "actor-kfold", "all") in by
    }
    names.sort(key=lambda n: -plain_all.get(n, 0.0))
    out = []
    for name in names:
        line = {"model": name}
        for norm in (False, True):
            for run in RUNS:
                r = by.get((name, norm, run["protocol"], run["subset"]))
                column = f"{run['protocol']} {run['subset']}" + (" (norm)" if norm else "")
                if r is None:
                    line[column] = "–"
                elif r["folds"] > 1:
                    line[column] = f"{r['accuracy']:.3f} ± {r['accuracy_sd']:.3f} / {r['uar']:.3f}"
                else:
                    line[column] = f"{r['accuracy']:.3f} / {r['uar']:.3f}"
        out.append(line)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="rf,svm,logreg,mlp,cnn,cnn_lstm,cnn_gru,ensemble")
    parser.add_argument("--speaker-norm", choices=["off", "on", "both"], default="both")
    parser.add_argument("--no-timing", action="store_true", help="skip the fit and single-clip timing")
    parser.add_argument("--timing-only", action="store_true", help="only the fit and single-clip timing")
    parser.add_argument("--render-only", action="store_true", help="rewrite the report from stored results")
    add_common_args(parser, "accuracy", data=True, workers=2)
    args = parser.parse_args()
    data = args.data
    settings = load_params(ROOT / "params.yaml")
    if not args.render_only:
        models = args.models.split(",")
        norms = {"off": [False], "on": [True], "both": [False, True]}[args.speaker_norm]
        threads = (
            f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
        )
        command = f"{threads}python benchmarks/accuracy.py --models {args.models} --workers {args.workers} "
        command += f"--speaker-norm {args.speaker_norm}" + (" --no-timing" if args.no_timing else "")
        if args.timing_only:
            command = f"{threads}python benchmarks/accuracy.py --models {args.models} --timing-only"
        for norm in [] if args.timing_only else norms:
            started = time.perf_counter()
            rows = [
                {**row, "command": command} for row in run_models(models, settings, norm, args.workers, data)
            ]
            save(lambda store, rows=rows: store["results"].update({key(row): row for row in rows}))
            print(f"speaker_norm={norm}: {(time.perf_counter() - started) / 60:.1f} min", flush=True)
        if not args.no_timing:
            for name in models:
                timing = {**time_model(name, settings, data), "section": settings[name], "command": command}
                save(lambda store, name=name, timing=timing: store["timing"].update({name: timing}))
    store = load_store()
    report = render(store, settings, data)
    plot_learning_curves(current(store, settings), args.out.with_name(CURVES))
    write_json(args.out.with_suffix(".json"), headline(current(store, settings), describe_data(data)))
    write_report(args.out, report)


if __name__ == "__main__":
    main()
