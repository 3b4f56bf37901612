"""Speed perturbation (or pitch shift, or noise) of the training actors, on validation actors.

    python benchmarks/augment_explore.py [--factors 0.9,1.1] [--workers 2]
    python benchmarks/augment_explore.py --augment pitch:-1,pitch:1 --augment noise:20 --report augment_more

Kaldi-style speed perturbation (resampling: tempo and pitch move together, like a different
vocal tract) makes new "speakers" out of the training actors, the usual cheap augmentation for
speaker-independent recognition. Every clip of the real sample (RAVDESS_DIR) is perturbed by
each factor and featurized like the pipeline does (hand-made, eGeMAPS, ComParE), cached under
.ser-cache/. For each actor-kfold fold, a configuration is fitted on the training actors' clips
plus their perturbed copies and scored on the fold's 2 validation actors' original clips; the
test actors are never read. Speech and all, with and without per-speaker normalisation (a
perturbed copy of an actor is normalised as its own speaker). Test-time augmentation too: a
validation clip's class probabilities averaged with its perturbed copies' (the copies it was trained
with; without augmentation, every copy made). Writes reports/augment_explore.md and .json.

``--augment`` (repeatable, instead of ``--factors``) names other copies, one training setting
each: ``speed:F`` (resampled by F), ``pitch:S`` (shifted by S semitones, tempo kept: a phase
vocoder), ``noise:D`` (white noise D dB below the clip's power, seeded by the file name).
"""

from __future__ import annotations

import argparse
import os
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
from compare_explore import (  # a sibling script: benchmarks/ is on sys.path
    accuracy_cells,
    map_timed,
    params_configs,
    write_report,
)

from components.data.audio import read_audio
from components.evaluation.dataset import Dataset, load_dataset
from components.evaluation.protocols import make_splits, select_subset
from components.models import build_model
from components.settings import load_params
from flows.featurize import featurize_data

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".ser-cache"
FEATURES = CACHE / "ravdess-features"  # shared with the other explore benchmarks
SETS = ["handmade", "egemaps", "compare"]
COPIES: list[str] = []  # the perturbed copies' feature folders under CACHE, set by main before the pool forks


def configurations() -> dict[str, dict[str, Any]]:
    """The configurations scored with and without augmentation: params.yaml's champion and its members."""
    return params_configs(["ensemble_compare", "svm", "logreg_compare"])


def copy_change(spec: str) -> Change:
    """The change named ``kind:value`` (see the module docstring) as ``(signal, rate, name) -> signal``;
    signals are ``[time]`` or ``[time, channels]`` (as ``read_audio`` gives them)."""
    kind, _, value = spec.partition(":")
    try:
        amount = float(value)
    except ValueError:
        amount = None
    if kind not in ("speed", "pitch", "noise") or amount is None:
        raise SystemExit(f"--augment {spec}: use speed:F, pitch:SEMITONES or noise:DB")
    if kind == "speed":
        return lambda signal, rate, name: soxr.resample(signal, round(rate * amount), rate)
    if kind == "pitch":
        import librosa

        def shift(signal: np.ndarray, rate: int, name: str) -> np.ndarray:
            # librosa wants [channels, time]; float64 keeps clear of the float32 numba crash
            return librosa.effects.pitch_shift(signal.T.astype(np.float64), sr=rate, n_steps=amount).T

        return shift
    return lambda signal, rate, name: add_noise(signal, amount, zlib.crc32(name.encode()))


def add_noise(signal: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """``signal`` plus white noise ``snr_db`` below its mean power (over the whole clip, silence included)."""
    power = float(np.mean(np.square(signal, dtype=np.float64)))
    noise = np.random.default_rng(seed).standard_normal(signal.shape) * np.sqrt(power / 10 ** (snr_db / 10))
    return (signal + noise).astype(np.float32)


def perturb_folder(source: Path, target: Path, factor: float) -> None:
    """Each WAV under ``source`` sped up by ``factor`` (resampled), at its relative path under ``target``."""
    change = copy_change(f"speed:{factor}")
    transform_folder(source, target, lambda signal, rate, name: change(signal, rate, name))


Change = Callable[[np.ndarray, int, str], np.ndarray]  # (signal, rate, file name) -> changed signal


def transform_folder(source: Path, target: Path, change: Change) -> None:
    """``change(signal, rate, file name)`` of each WAV under ``source``, written atomically at its relative
    path under ``target`` (float WAV, same rate); files already there are kept."""
    for path in sorted(source.rglob("*.wav")):
        out = target / path.relative_to(source)
        if out.exists():
            continue
        signal, rate = read_audio(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp.wav")
        sf.write(tmp, np.asarray(change(signal, rate, path.name), dtype=np.float32), rate, subtype="FLOAT")
        tmp.replace(out)


def aligned(data: Dataset, clip_ids: np.ndarray) -> Dataset:
    """``data``'s rows reordered to ``clip_ids``."""
    position = {clip: row for row, clip in enumerate(data.labels["clip_id"])}
    rows_array = np.asarray([position[clip] for clip in clip_ids])
    return Dataset(
        data.labels.iloc[rows_array].reset_index(drop=True),
        {name: values[rows_array] for name, values in data.stats.items()},
    )


def validation_scores(
    job: tuple[dict[str, Any], str, bool, tuple[str, ...]],
) -> tuple[list[float], list[float]]:
    """Validation-actor accuracy of one configuration on every fold, trained with the given copies.

    Returns the accuracy on the original clips, and with test-time augmentation: the mean of the
    probabilities of each validation clip and its perturbed copies.
    """
    config, subset, norm, copies = job
    original = load_dataset(FEATURES, SETS, False)
    keep = original.labels.index.isin(select_subset(original.labels, subset).index)
    original = original.subset(keep)
    extra = [
        aligned(load_dataset(CACHE / copy, SETS, False), original.labels["clip_id"].to_numpy())
        for copy in COPIES
    ]
    if norm:
        original = original.normalized_per_speaker()
        extra = [copy.normalized_per_speaker() for copy in extra]
    trained_on = [copy for name, copy in zip(COPIES, extra, strict=True) if name in copies]
    tested_on = trained_on or extra
    y = original.labels["emotion"].to_numpy()
    settings = {k: v for k, v in config.items() if k not in ("kind", "features")}
    plain, tta = [], []
    for split in make_splits(original.labels, "actor-kfold", n_folds=6, n_val_actors=2):
        parts = [data.inputs(split.train, config["features"], False) for data in (original, *trained_on)]
        inputs = {**parts[0], "stats": np.vstack([part["stats"] for part in parts])}
        model = build_model(config["kind"], settings).fit(inputs, np.tile(y[split.train], len(parts)))
        probas = [
            model.predict_proba(data.inputs(split.val, config["features"], False))
            for data in (original, *tested_on)
        ]
        plain.append(float(np.mean(model.classes_[probas[0].argmax(axis=1)] == y[split.val])))
        tta.append(float(np.mean(model.classes_[np.mean(probas, axis=0).argmax(axis=1)] == y[split.val])))
    return plain, tta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--factors", default="0.9,1.1", help="speed factors (one setting), unless --augment")
    parser.add_argument("--augment", action="append", help="copies of one setting: speed:F,pitch:S,noise:D")
    parser.add_argument("--report", default="augment_explore", help="reports/<name>.md and .json")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    groups = args.augment or [",".join(f"speed:{f}" for f in args.factors.split(","))]
    specs = sorted({spec for group in groups for spec in group.split(",")})
    changes = {spec: copy_change(spec) for spec in specs}  # a bad spec stops here, before any work
    data_dir = Path(os.environ.get("RAVDESS_DIR", ROOT.parent / "shared" / "ravdess"))
    params = load_params(ROOT / "params.yaml")
    started = time.perf_counter()
    featurize_data(data_dir, FEATURES, params, SETS)
    folders = {}
    for spec, change in changes.items():
        kind, _, value = spec.partition(":")
        name = f"ravdess-{kind}{float(value):g}"  # ravdess-speed0.9: the folders of earlier runs
        transform_folder(data_dir, CACHE / f"{name}-audio", change)
        featurize_data(CACHE / f"{name}-audio", CACHE / f"{name}-features", params, SETS)
        folders[spec] = f"{name}-features"
    COPIES[:] = list(folders.values())
    prepare_min = (time.perf_counter() - started) / 60
    configs = configurations()
    settings = [("none", ())] + [
        (describe_copies(group), tuple(folders[spec] for spec in group.split(","))) for group in groups
    ]
    jobs = [
        (config, subset, norm, chosen)
        for subset in ("speech", "all")
        for norm in (False, True)
        for _, chosen in settings
        for config in configs.values()
    ]
    scores, fit_min = map_timed(validation_scores, jobs, args.workers)
    labels = [(name, aug) for _s in range(2) for _n in range(2) for aug, _ in settings for name in configs]
    rows = [
        {
            "subset": subset,
            "norm": "speaker" if norm else "none",
            "model": name,
            "trained on": "original" if aug == "none" else f"original + {aug}",
            "tested on": tested,
            **accuracy_cells(s),
        }
        for (name, aug), (_, subset, norm, _), both in zip(labels, jobs, scores, strict=True)
        for tested, s in zip(("original", "TTA mean"), both, strict=True)
    ]
    by = {
        (r["subset"], r["norm"], r["model"], r["trained on"], r["tested on"]): r["val accuracy"] for r in rows
    }
    findings = [
        f"trained on {trained}, tested on {tested}, {model}, {s}/{n}: "
        f"{score - by[(s, n, model, 'original', 'original')]:+.3f}"
        for (s, n, model, trained, tested), score in by.items()
        if (trained, tested) != ("original", "original")
    ]
    chosen = " ".join(f"--augment {g}" for g in args.augment) if args.augment else f"--factors {args.factors}"
    report = "" if args.report == "augment_explore" else f" --report {args.report}"
    command = f"python benchmarks/augment_explore.py {chosen}{report} --workers {args.workers}"
    what = "Speed perturbation" if not args.augment else "Perturbed copies (" + "; ".join(groups) + ")"
    heading = [
        f"# {what} of the training actors, and test-time augmentation, on validation actors",
        "",
        f"`{command}` ({prepare_min:.1f} min to perturb and featurize, {fit_min:.1f} min of fitting).",
        "Each configuration is fitted on the training actors of each actor-kfold fold (plus, with",
        "augmentation, their perturbed copies) and scored on that fold's 2 validation actors' original",
        "clips (never its test actors); `TTA mean`: the class probabilities averaged over each",
        "validation clip and its perturbed copies (those it was trained with; without augmentation,",
        f"all). Mean ± sd over the 6 folds. {len(rows)} rows.",
    ]
    write_report(args.report, heading, findings, rows, command)


def describe_copies(group: str) -> str:
    """``speed:0.9,speed:1.1`` → ``speed 0.9/1.1`` (the label earlier reports used), else as given."""
    kinds = {spec.partition(":")[0] for spec in group.split(",")}
    if len(kinds) == 1:
        return f"{kinds.pop()} " + "/".join(f"{float(spec.partition(':')[2]):g}" for spec in group.split(","))
    return group


if __name__ == "__main__":
    main()
