"""Clip length for the deep models, and how the random protocol moves with actors and cut clips.

    python -m experiments.length_and_protocol --data /work/shared/ravdess --work /tmp/length_and_protocol
        [--parts length,protocol] [--workers 2]

Two questions of issue 17, each a fixed list of runs made once:

1. **length**: ``preprocess.clip_dur`` 4.0 (today) against 5.0 s (every speech clip of the sample
   whole, trimmed or not) for ``cnn`` and ``cnn_gru`` (params.yaml sections), RAVDESS speech of
   actors 01-12. ``ser featurize`` writes handmade and logmel with a copy of params.yaml whose
   ``clip_dur`` is changed; only logmel depends on it (the scalar sets are computed over the
   trimmed clip's own length). Protocol: the 6 folds of ``actor_kfold(n_folds=6,
   n_val_actors=2)``; each fold's model is fitted with the pipeline's ``fit_on_rows`` on 7 of
   its 8 training actors, early-stopped on the 8th (the training actor that follows the
   validation actors in rotation) and scored on the fold's 2 validation actors. Test actors are
   never read.
2. **protocol**: ``ser evaluate --protocol random`` (the original project's stratified 80/20,
   seed 42) for ``rf`` and ``cnn``: speech + song of actors 01-04, 01-08 and 01-12 (symlinked
   folders), and speech of actors 01-12 at full length against the same speech cut to its first
   2.39 s (a copy written with soundfile), as the sample's song is cut.

Everything but the report lives under ``--work`` (symlinks, the cut copy, feature caches,
params copies). Writes reports/length_and_protocol.md and .json.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import yaml

from components.data.audio import load_clip
from components.evaluation.dataset import load_dataset
from components.evaluation.evaluate import ModelSpec, fit_on_rows
from components.evaluation.metrics import compute_metrics, format_table, summarize_folds
from components.evaluation.protocols import actor_kfold
from components.runtime.files import exit_on_error, write_text
from components.tracking.runs import git_commit

ROOT = Path(__file__).resolve().parents[1]
CLIP_DURS = (4.0, 5.0)
DEEP_MODELS = ("cnn", "cnn_gru")
ACTOR_COUNTS = (4, 8, 12)
PROTOCOL_MODELS = "rf,cnn"
CUT_DUR = 2.39  # seconds: the song of the sample is cut to this
LENGTH_COLUMNS = ["model", "clip_dur", "n_frames", "val_uar", "val_uar_sd", "val_accuracy", "val_accuracy_sd"]
LENGTH_COLUMNS += ["fit_s_per_fold"]
FOLD_COLUMNS = ["model", "clip_dur", "fold", "val_actors_scored", "early_stop_actor", "uar", "accuracy"]
FOLD_COLUMNS += ["epochs", "fit_seconds"]
PROTOCOL_COLUMNS = ["actors", "subset", "speech", "model", "n_clips", "n_test", "accuracy", "accuracy_se"]
PROTOCOL_COLUMNS += ["uar", "weighted_f1"]
MODEL_CODE = (  # files another session may be changing: their state is recorded with the results
    "components/models/nets.py",
    "components/models/torch_classifier.py",
    "components/evaluation/dataset.py",
    "components/evaluation/evaluate.py",
)


def wavs(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.wav"))


def clip_lengths(data: Path, trim_top_db: float, sampling_rate: int) -> dict[str, Any]:
    """Raw and trimmed (as featurize loads them) lengths of the speech clips, in seconds."""
    paths = wavs(data / "speech")
    raw = np.array([sf.info(str(p)).duration for p in paths])
    trimmed = np.array([
        len(load_clip(p, clip_dur=None, trim_top_db=trim_top_db, sampling_rate=sampling_rate)) / sampling_rate
        for p in paths
    ])  # fmt: skip
    out: dict[str, Any] = {"n_clips": len(paths)}
    for name, values in (("raw", raw), ("trimmed", trimmed)):
        out[name] = {
            "min": round(float(values.min()), 2),
            "median": round(float(np.median(values)), 2),
            "max": round(float(values.max()), 2),
            **{f"share_over_{d:g}s": round(float((values > d).mean()), 3) for d in CLIP_DURS},
        }
    return out


def params_copy(work: Path, clip_dur: float | None = None) -> Path:
    """A frozen copy of params.yaml under ``work`` (with ``preprocess.clip_dur`` changed if given)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    if clip_dur is not None:
        params["preprocess"]["clip_dur"] = clip_dur
    path = work / (f"params-{clip_dur:g}.yaml" if clip_dur is not None else "params.yaml")
    write_text(path, yaml.safe_dump(params, sort_keys=False))
    return path


def link_actors(data: Path, out: Path, n_actors: int, channels: tuple[str, ...]) -> Path:
    """``out/<channel>/Actor_NN/*.wav``: symlinks to the clips of the first ``n_actors`` actors of ``data``.

    The clips are linked one by one: the pipeline's discovery follows no symlinked folder.
    """
    for channel in channels:
        for actor in range(1, n_actors + 1):
            for clip in wavs(data / channel / f"Actor_{actor:02d}"):
                link = out / channel / clip.parent.name / clip.name
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.is_symlink():
                    link.symlink_to(clip.resolve())
    return out


def cut_copy(data: Path, out: Path, cut_dur: float) -> Path:
    """The speech of ``data`` cut to its first ``cut_dur`` seconds, written under ``out/speech``."""
    for path in wavs(data / "speech"):
        target = out / "speech" / path.parent.name / path.name
        if target.exists():
            continue
        signal, rate = sf.read(str(path), dtype="int16")
        target.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(target), signal[: round(cut_dur * rate)], rate, subtype="PCM_16")
    return out


def ser(*args: str) -> tuple[str, str]:
    """Run the ``ser`` CLI of this environment; return the command line and its printed output."""
    command = [str(Path(sys.executable).parent / "ser"), *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{shlex.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    print(done.stdout, flush=True)
    return shlex.join(["ser", *args]), done.stdout


def early_stop_actor(train_actors: list[int], val_actors: tuple[int, ...]) -> int:
    """The training actor that follows the fold's validation actors in rotation."""
    ordered = sorted(train_actors)
    return next((a for a in ordered if a > max(val_actors)), ordered[0])


def score_length(job: tuple[str, dict, Path, float]) -> dict[str, Any]:
    """One deep model at one clip length: validation scores over the 6 actor folds."""
    name, section, features, clip_dur = job
    spec = ModelSpec.from_params(name, section)
    data = load_dataset(features, spec.stats_sets, spec.uses_logmel, spec.sequence)
    data = data.subset(data.labels["vocal_channel"].to_numpy() == 1)
    actors = data.labels["actor"].to_numpy()
    y = data.labels["emotion"].to_numpy()
    scored = sorted(set(y))
    folds, records = [], []
    for split in actor_kfold(data.labels, n_folds=6, n_val_actors=2):
        stop_actor = early_stop_actor(sorted({int(a) for a in actors[split.train]}), split.val_actors)
        fit_rows = split.train[actors[split.train] != stop_actor]
        stop_rows = split.train[actors[split.train] == stop_actor]
        started = time.perf_counter()
        model = fit_on_rows(spec, data, fit_rows, stop_rows)
        seconds = time.perf_counter() - started
        predicted = model.predict(data.inputs(split.val, spec.stats_sets, spec.uses_logmel))
        folds.append(compute_metrics(y[split.val], predicted, classes=scored))
        history = getattr(getattr(model, "train_result_", None), "history", None) or {}
        records.append({
            "fold": split.name, "val_actors_scored": list(split.val_actors), "early_stop_actor": stop_actor,
            "uar": round(folds[-1]["uar"], 4), "accuracy": round(folds[-1]["accuracy"], 4),
            "epochs": len(next(iter(history.values()), [])), "fit_seconds": round(seconds, 1),
        })  # fmt: skip
        print(name, clip_dur, records[-1], flush=True)
    summary = summarize_folds(folds)
    return {
        "model": name,
        "clip_dur": clip_dur,
        "n_frames": int(data.logmel.shape[2]),
        "val_uar": round(summary["uar_mean"], 3),
        "val_uar_sd": round(summary["uar_sd"], 3),
        "val_accuracy": round(summary["accuracy_mean"], 3),
        "val_accuracy_sd": round(summary["accuracy_sd"], 3),
        "fit_s_per_fold": round(float(np.mean([r["fit_seconds"] for r in records])), 1),
        "folds": records,
    }


def length_part(data: Path, work: Path, workers: int) -> dict[str, Any]:
    speech = link_actors(data, work / "ravdess-speech", 12, ("speech",))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    lengths = clip_lengths(data, params["preprocess"]["trim_top_db"], params["preprocess"]["sampling_rate"])
    commands, jobs = [], []
    for clip_dur in CLIP_DURS:
        features = work / f"features-{clip_dur:g}"
        command, _ = ser(
            "featurize", str(speech), "--out", str(features), "--sets", "handmade,logmel",
            "--params", str(params_copy(work, clip_dur)),
        )  # fmt: skip
        commands.append(command)
        jobs += [(name, params[name], features, clip_dur) for name in DEEP_MODELS]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            rows = list(pool.map(score_length, jobs))
    else:
        rows = [score_length(job) for job in jobs]
    return {"lengths": lengths, "featurize_commands": commands, "rows": rows}


def protocol_part(data: Path, work: Path, workers: int) -> dict[str, Any]:
    params = str(params_copy(work))
    runs = []
    folders = [
        (n, link_actors(data, work / f"ravdess-{n}", n, ("speech", "song")), "all") for n in ACTOR_COUNTS
    ]
    folders += [
        (12, work / "ravdess-12", "speech"),
        (12, cut_copy(data, work / "ravdess-speech-cut", CUT_DUR), "speech"),
    ]
    for n_actors, folder, subset in folders:
        features = work / f"features-{folder.name}"
        out = work / f"{folder.name}-{subset}.json"
        command, printed = ser(
            "evaluate", str(folder), "--protocol", "random", "--subset", subset, "--models", PROTOCOL_MODELS,
            "--features", str(features), "--params", params, "--n-workers", str(workers), "--json", str(out),
        )  # fmt: skip
        n_clips = sum(len(wavs(folder / c)) for c in (("speech", "song") if subset == "all" else ("speech",)))
        n_test = math.ceil(0.2 * n_clips)  # train_test_split's test size for test_size=0.2
        for row in json.loads(out.read_text()):
            acc = row["accuracy"]
            runs.append({
                "actors": f"01-{n_actors:02d}", "subset": subset,
                "speech": "cut 2.39 s" if folder.name.endswith("cut") else "full",
                "model": row["model"], "n_clips": n_clips, "n_test": n_test,
                "accuracy": acc, "uar": row["uar"], "weighted_f1": row["weighted_f1"],
                "accuracy_se": round(math.sqrt(acc * (1 - acc) / n_test), 3),
                "command": command, "printed": printed,
            })  # fmt: skip
    return {"rows": runs}


def code_state() -> dict[str, str]:
    """Whether each of MODEL_CODE differs from the commit (another session may be editing it)."""
    state = {}
    for path in MODEL_CODE:
        done = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", path], cwd=ROOT, check=False)
        state[path] = "as committed" if done.returncode == 0 else "modified in the working tree"
    return state


def length_findings(length: dict[str, Any]) -> list[str]:
    """The 5 s minus 4 s differences, and what the clip lengths say about padding."""
    by = {(r["model"], r["clip_dur"]): r for r in length["rows"]}
    trimmed = length["lengths"]["trimmed"]
    lines = ["Differences, clip_dur 5.0 minus 4.0 (validation UAR; fold sd beside them):", ""]
    for model in DEEP_MODELS:
        long, short = by[(model, CLIP_DURS[1])], by[(model, CLIP_DURS[0])]
        lines.append(
            f"- {model}: {long['val_uar'] - short['val_uar']:+.3f} "
            f"(sd {short['val_uar_sd']:.3f} at {CLIP_DURS[0]:g} s, "
            f"{long['val_uar_sd']:.3f} at {CLIP_DURS[1]:g} s)"
        )
    lines += [
        "",
        f"After trimming, {trimmed['share_over_4s']:.1%} of the speech clips are longer than 4 s (longest "
        f"{trimmed['max']:.2f} s), so clip_dur 4.0 cuts few clips, and little of them; the median trimmed "
        f"clip ({trimmed['median']:.2f} s) fills {trimmed['median'] / CLIP_DURS[0]:.0%} of a 4 s log-mel "
        f"and {trimmed['median'] / CLIP_DURS[1]:.0%} of a 5 s one, the rest being padding frames the nets "
        "pool over. The scalar sets (handmade, egemaps, compare, whisper_tiny_en_layers) do not depend "
        "on clip_dur: featurize loads each clip trimmed at its own length and only logmel (and "
        "whisper_tiny_en_frames) pad or cut it.",
        "",
    ]
    return lines


def protocol_findings(rows: list[dict[str, Any]]) -> list[str]:
    """Accuracy against the number of actors, and cut minus full speech, with their standard errors."""
    lines = ["Accuracy (random, speech + song) by number of actors, ± binomial standard error:", ""]
    for model in PROTOCOL_MODELS.split(","):
        cells = [
            f"{r['actors']}: {r['accuracy']:.3f} ± {r['accuracy_se']:.3f}"
            for r in rows
            if r["model"] == model and r["subset"] == "all"
        ]
        lines.append(f"- {model}: " + "; ".join(cells))
    lines += ["", "Speech cut to 2.39 s minus full-length speech (random, speech, actors 01-12):", ""]
    for model in PROTOCOL_MODELS.split(","):
        pair = {r["speech"]: r for r in rows if r["model"] == model and r["subset"] == "speech"}
        if len(pair) == 2:
            cut, full = pair["cut 2.39 s"], pair["full"]
            lines.append(
                f"- {model}: accuracy {cut['accuracy'] - full['accuracy']:+.3f}, "
                f"UAR {cut['uar'] - full['uar']:+.3f} "
                f"(the same {full['n_test']} test clips: clip ids come from file names)"
            )
    lines += [
        "",
        "What these runs cannot say: a figure for 24 actors (actors 13-24 are not in the sample, and the "
        "4, 8 and 12-actor points are the first actors, one seed-42 split each: read any trend against "
        "the standard errors above, which cover only the test draw); what cutting the song costs (the "
        "sample has no full-length song; only speech was cut here, and song is sung, not spoken); "
        "anything about the original project's own features and training.",
    ]
    return [*lines, ""]


def render(result: dict[str, Any]) -> str:
    lines = [
        "# Clip length for the deep models; the random protocol against actors and cut clips",
        "",
        f"> Produced at commit {result['commit'][:7]} by: `{result['command']}`",
        "",
        "Model code when run: " + "; ".join(f"{k} {v}" for k, v in result["code_state"].items()) + ".",
        "",
    ]
    if "length" in result:
        length = result["length"]
        lines += [
            "## 1. clip_dur 4.0 against 5.0 s (cnn, cnn_gru; speech, actors 01-12; validation actors)",
            "",
            f"Speech clip lengths in seconds ({length['lengths']['n_clips']} clips; trimmed = as featurize "
            "loads them, silence quieter than preprocess.trim_top_db cut from both ends):",
            "",
            format_table(
                [{"length": k, **v} for k, v in length["lengths"].items() if k != "n_clips"],
                ["length", "min", "median", "max", *(f"share_over_{d:g}s" for d in CLIP_DURS)],
            ),
            "",
            "Feature tables: " + "; ".join(f"`{c}`" for c in length["featurize_commands"]) + ".",
            "",
            "Validation UAR and accuracy, mean ± sd (ddof 1) over 6 actor folds: fitted on 7 training "
            "actors, early-stopped on the 8th, scored on the fold's 2 validation actors; test actors "
            f"never read. {len(length['rows'])} configurations, one run each.",
            "",
            format_table(
                length["rows"],
                LENGTH_COLUMNS,
            ),
            "",
            "Per fold:",
            "",
            format_table(
                [
                    {"model": r["model"], "clip_dur": r["clip_dur"], **f}
                    for r in length["rows"]
                    for f in r["folds"]
                ],
                FOLD_COLUMNS,
            ),
            "",
            *length_findings(length),
        ]
    if "protocol" in result:
        rows = result["protocol"]["rows"]
        lines += [
            "## 2. Random protocol (stratified 80/20, seed 42): actors and cut speech (rf, cnn)",
            "",
            "One split each, so one figure per cell; `accuracy_se` is the binomial standard error "
            "sqrt(acc (1 - acc) / n_test) of that one test set (split-to-split spread is not in it).",
            "",
            format_table(
                rows,
                PROTOCOL_COLUMNS,
            ),
            "",
            "Commands (each printed the rows above):",
            "",
            *sorted({f"    {r['command']}" for r in rows}),
            "",
            *protocol_findings(rows),
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.length_and_protocol",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="RAVDESS folder (speech/ and song/ of actors 01-12)"
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/length_and_protocol"), help="scratch folder")
    parser.add_argument("--parts", default="length,protocol", help="length, protocol or both")
    parser.add_argument("--workers", type=int, default=2, help="processes at once")
    parser.add_argument("--reports", type=Path, default=ROOT / "reports", help="where the report goes")
    parser.add_argument("--render-only", action="store_true", help="re-render the .md from the .json")
    args = parser.parse_args(argv)
    path = args.reports / "length_and_protocol.json"
    if args.render_only:
        write_text(args.reports / "length_and_protocol.md", render(json.loads(path.read_text())))
        return
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - {"length", "protocol"})
    if unknown:
        raise SystemExit(f"--parts: unknown part(s) {unknown}; choose length, protocol or both")
    command = shlex.join(
        ["python", "-m", "experiments.length_and_protocol", *(sys.argv[1:] if argv is None else argv)]
    )
    args.work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"command": command, "commit": git_commit(), "code_state": code_state()}
    if path.exists():  # a part run alone keeps the other part's results
        kept = json.loads(path.read_text())
        result |= {p: kept[p] for p in ("length", "protocol") if p in kept and p not in parts}
        if any(p in kept for p in ("length", "protocol") if p not in parts):
            result["command"] = f"{kept['command']}; {command}"
    if "length" in parts:
        result["length"] = length_part(args.data.resolve(), args.work, args.workers)
    if "protocol" in parts:
        result["protocol"] = protocol_part(args.data.resolve(), args.work, args.workers)
    write_text(path, json.dumps(result, indent=1))
    report = render(result)
    write_text(args.reports / "length_and_protocol.md", report)
    print(report)


if __name__ == "__main__":
    exit_on_error(main)
