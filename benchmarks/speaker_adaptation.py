"""Speaker adaptation as deployed: accuracy against the number of unlabelled clips of a new speaker.

    python benchmarks/speaker_adaptation.py [--data DIR] [--features DIR] [--models A,B] [--draws N]

Actor-kfold on speech (params.yaml's folds). Each fold's model is fitted plain, as the published
model is, and its training mean recorded. A test speaker's clips are then re-centred with
``components.serving.adaptation``: shifted by ``training mean - mean of k of their clips``, the k
clips drawn at random (``--draws`` seeded draws) from the very clips being predicted (unlabelled,
transductive); the spread stays the training data's. The same is done on each fold's validation
actors with a model fitted on its training actors alone: that curve, never the test actors',
chooses ``evaluate.speaker_min_clips``. For comparison, each model is also fitted on training
speakers each re-centred with all their clips (not what is deployed). Writes
reports/speaker_adaptation.md and reports/speaker_adaptation_curve.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from common import REPORTS, ROOT, add_common_args, check_data, write_report

from components.evaluation.evaluate import ModelSpec, fit_on_rows, prepare_data
from components.evaluation.metrics import format_table
from components.evaluation.protocols import actor_kfold
from components.serving.adaptation import speaker_offset
from components.settings import load_params, load_settings
from flows.evaluate import needed_sets
from flows.featurize import featurize_data

KS: tuple[int, ...] = (1, 2, 4, 8, 16)  # clips of the speaker behind the statistics; then all of them
FEATURES = ROOT / ".ser-cache" / "ravdess-features"


def curve(
    spec: ModelSpec,
    data: Any,
    fit_rows: np.ndarray,
    scored_rows: np.ndarray,
    draws: int,
    rng: np.random.Generator,
    centre_training: bool = False,
) -> dict[str, float]:
    """Accuracy on ``scored_rows`` plain and adapted with k random clips per speaker (mean over draws).

    ``centre_training``: fit on training speakers each re-centred on the training mean with all
    their clips (what is not deployed: the published model is fitted plain).
    """
    model = fit_on_rows(spec, centred(data, fit_rows) if centre_training else data, fit_rows, None)
    reference = data.inputs(fit_rows, spec.stats_sets, False)["stats"].astype(np.float64).mean(axis=0)
    inputs = data.inputs(scored_rows, spec.stats_sets, spec.uses_logmel)
    y = data.labels["emotion"].to_numpy()[scored_rows]
    actors = data.labels["actor"].to_numpy()[scored_rows]
    plain = inputs["stats"].astype(np.float64)
    out = {"plain": float(np.mean(model.predict(inputs) == y))}
    for k in (*KS, "all"):
        scores = []
        for _ in range(1 if k == "all" else draws):
            shifted = plain.copy()
            for actor in np.unique(actors):
                mine = np.flatnonzero(actors == actor)
                chosen = mine if k == "all" else rng.choice(mine, size=min(k, len(mine)), replace=False)
                shifted[mine] += speaker_offset(plain[chosen], reference)
            scores.append(float(np.mean(model.predict({**inputs, "stats": shifted}) == y)))
        out[str(k)] = float(np.mean(scores))
    return out


def centred(data: Any, rows: np.ndarray) -> Any:
    """A copy of ``data`` whose ``rows`` are re-centred, speaker by speaker, on their common mean."""
    actors = data.labels["actor"].to_numpy()
    stats = {}
    for name, values in data.stats.items():
        shifted = values.astype(np.float64)
        for actor in np.unique(actors[rows]):
            mine = rows[actors[rows] == actor]
            shifted[mine] += speaker_offset(shifted[mine], shifted[rows].mean(axis=0))
        stats[name] = shifted
    return type(data)(data.labels, stats, data.logmel)


def choose_min_clips(val: dict[str, list[float]]) -> int:
    """The fewest clips from which adaptation beats the plain model on validation actors, as do all more."""
    plain = np.mean(val["plain"])
    chosen = None
    for k in reversed(KS):
        if np.mean(val[str(k)]) <= plain:
            break
        chosen = k
    return chosen if chosen is not None else KS[-1]


CENTRED = ", centred training"  # the suffix of the variant that is measured, not deployed


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    """Test accuracy against k: adapted (solid), plain (dashed), trained centred (dotted), the minimum."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    positions = [*KS, 2 * KS[-1]]  # "all" (60 clips a speaker) drawn one step past 16
    bases = [name for name in results if not name.endswith(CENTRED)]
    for name, found in results.items():
        base = name.removesuffix(CENTRED)
        colour = f"C{bases.index(base)}"
        test = found["test"]
        means = [np.mean(test[str(k)]) for k in (*KS, "all")]
        if name.endswith(CENTRED):
            ax.plot(
                positions,
                means,
                ls=":",
                marker=".",
                color=colour,
                label=f"{base}, trained centred (not deployed)",
            )
            continue
        sds = [np.std(test[str(k)]) for k in (*KS, "all")]
        ax.errorbar(positions, means, yerr=sds, marker="o", capsize=3, color=colour, label=f"{name}, adapted")
        ax.axhline(np.mean(test["plain"]), ls="--", color=colour, label=f"{name}, plain model")
    ax.axvline(results[bases[0]]["min_clips"], ls="-.", color="grey", label="speaker_min_clips (validation)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(positions, [*map(str, KS), "all"])
    ax.set_xlabel("unlabelled clips of the test speaker behind the statistics (k)")
    ax.set_ylabel("test accuracy (actor-kfold, speech, mean of 6 folds)")
    ax.set_title("Speaker adaptation as deployed: re-centred on the training mean")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, "speaker_adaptation", data=True)
    parser.add_argument("--features", type=Path, default=FEATURES, help="feature cache (filled when empty)")
    parser.add_argument("--models", default="logreg_whisper,ensemble_compare")  # the champion kind first
    parser.add_argument("--draws", type=int, default=10, help="random draws of the k clips per speaker")
    args = parser.parse_args()
    settings = load_params()
    specs = [ModelSpec.from_params(name, settings[name]) for name in args.models.split(",")]
    sets = needed_sets(specs)
    if not all((args.features / f"{name}.parquet").is_file() for name in sets):
        featurize_data(check_data(args.data), args.features, load_settings(), feature_sets=sets)
    evaluate = settings["evaluate"]
    results: dict[str, dict[str, Any]] = {}
    for centre_training in (False, True):
        for spec in specs:
            started = time.perf_counter()
            data = prepare_data(spec, args.features, "speech", speaker_norm=False)
            splits = actor_kfold(data.labels, evaluate["n_folds"], evaluate["n_val_actors"])
            rng = np.random.default_rng(0)
            val: dict[str, list[float]] = {}
            test: dict[str, list[float]] = {}
            for split in splits:
                found = curve(spec, data, split.train, split.val, args.draws, rng, centre_training)
                for key, value in found.items():
                    val.setdefault(key, []).append(value)
                fit_rows = np.union1d(split.train, split.val)
                found = curve(spec, data, fit_rows, split.test, args.draws, rng, centre_training)
                for key, value in found.items():
                    test.setdefault(key, []).append(value)
            name = f"{spec.name}, centred training" if centre_training else spec.name
            results[name] = {"val": val, "test": test, "min_clips": choose_min_clips(val)}
            results[name]["seconds"] = time.perf_counter() - started
            print(name, {k: round(float(np.mean(v)), 3) for k, v in test.items()}, flush=True)
    REPORTS.mkdir(exist_ok=True)
    plot(results, args.out.with_name("speaker_adaptation_curve.png"))
    write_report(args.out, report(results, len(data.labels), args.draws))


def mean_sd(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def report(results: dict[str, dict[str, Any]], n_clips: int, draws: int) -> str:
    """The Markdown report: the test curve, the validation curve and the chosen minimum."""
    columns = ["plain", *map(str, KS), "all"]
    test_rows = [
        {"model": name, **{k: mean_sd(found["test"][k]) for k in columns}} for name, found in results.items()
    ]
    val_rows = [
        {
            "model": name,
            **{k: f"{np.mean(found['val'][k]):.3f}" for k in columns},
            "min clips": found["min_clips"],
        }
        for name, found in results.items()
    ]
    deployed = [name for name in results if not name.endswith(CENTRED)]
    chosen = results[deployed[0]]["min_clips"]

    def test_mean(name: str, column: str) -> float:
        return float(np.mean(results[name]["test"][column]))

    at_minimum = "; ".join(
        f"{name}: {test_mean(name, str(chosen)):.3f} adapted vs {test_mean(name, 'plain'):.3f} plain"
        for name in deployed
    )
    centred = "; ".join(
        f"{name}: all clips {test_mean(name + CENTRED, 'all') - test_mean(name, 'all'):+.3f}, "
        f"k = {chosen} {test_mean(name + CENTRED, str(chosen)) - test_mean(name, str(chosen)):+.3f}, "
        f"plain model {test_mean(name + CENTRED, 'plain') - test_mean(name, 'plain'):+.3f}"
        for name in deployed
        if name + CENTRED in results
    )
    return "\n".join(
        [
            "# Speaker adaptation as deployed: accuracy against clips of the new speaker",
            "",
            f"RAVDESS actors 01-12, speech ({n_clips} clips), actor-kfold (params.yaml's 6 folds, "
            "2 validation actors each). Each model is fitted plain, as published, and the mean of "
            "its training clips' features recorded. A test speaker's clips are all shifted by "
            "`training mean - mean of k of their clips` (`components/serving/adaptation.py`, the "
            "code `ser predict --speaker-*` runs), then go through the model's own scaler and "
            "classifier; the spread is left as it is (z-scoring with the k clips' own sd collapses "
            "at k = 2: reports/whisper_encoder.md). The k clips are drawn at random "
            f"({draws} seeded draws, averaged) from the clips being predicted: unlabelled and "
            "transductive. Column `plain`: no adaptation; `all`: the speaker's 60 clips. Rows "
            f"`{CENTRED.strip(', ')}`: the same, but the model fitted on training speakers each "
            "re-centred with all their clips (measured, not deployed).",
            "",
            "## Test actors (mean ± sd over the 6 folds)",
            "",
            format_table(test_rows, ["model", *columns]),
            "",
            "## Validation actors: the choice of `evaluate.speaker_min_clips`",
            "",
            "Fitted on each fold's 8 training actors, scored on its 2 validation actors (never the "
            "test actors); mean over folds. `min clips`: the fewest k from which adaptation beats "
            "the plain model, for that k and every larger one.",
            "",
            format_table(val_rows, ["model", *columns, "min clips"]),
            "",
            f"Chosen default: `evaluate.speaker_min_clips: {chosen}`, the choice for the champion "
            f"kind {deployed[0]} on validation actors. On the test actors at k = {chosen}: "
            f"{at_minimum}.",
            "",
            f"Training on centred speakers, change against the deployed model: {centred}.",
            "",
            "Time: "
            + ", ".join(f"{name} {found['seconds']:.0f} s" for name, found in results.items())
            + " (fitting included).",
            "",
            "Plot: [speaker_adaptation_curve.png](speaker_adaptation_curve.png).",
        ]
    )


if __name__ == "__main__":
    main()
