"""The ``ser`` command: every pipeline stage, usable outside DVC."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from components.errors import SerError
from components.paths import PARAMS_FILE
from components.runtime.files import check_output, exit_on_error
from components.runtime.interrupts import stop_on_interrupt
from components.settings import Settings, Tracking, find_settings, load_settings

app = typer.Typer(
    help="Speech emotion recognition on RAVDESS: data, validation, features, models.",
    epilog="Exit status: 0 done; 1 a mistake in the input, settings or outputs (one error: line); "
    "2 a mistyped command; 130 stopped by Ctrl-C (outputs left as they were).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(
    help="Get audio: the offline demo corpus or the official RAVDESS zips.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
registry_app = typer.Typer(help="The model registry: versions, aliases, rollback.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")

ParamsOption = Annotated[Path, typer.Option("--params", help="Settings file (params.yaml).")]


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="Folder to write the corpus into.")] = Path("demo-corpus"),
    actors: Annotated[int, typer.Option(help="Number of actors (1-24); odd ids male, even female.")] = 8,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives identical files.")] = 0,
    n_jobs: Annotated[int, typer.Option(help="Worker processes.")] = 2,
) -> None:
    """Write the synthetic demo corpus: RAVDESS's layout and names, 48 kHz 16-bit WAV."""
    from components.data.synth import write_corpus

    if not 1 <= actors <= 24:
        raise SerError(f"--actors {actors}: RAVDESS has actors 1 to 24")
    start = time.perf_counter()
    write_corpus(out, n_actors=actors, seed=seed, n_jobs=n_jobs)
    n_files = sum(1 for _ in out.rglob("*.wav"))
    typer.echo(f"wrote {n_files} clips of {actors} actors to {out} in {time.perf_counter() - start:.1f} s")


@data_app.command("fetch")
def data_fetch(
    out: Annotated[Path, typer.Option(help="Folder for the downloaded zips.")] = Path("data/downloads"),
    base_url: Annotated[
        str | None,
        typer.Option(help="Mirror to download from (default: Zenodo; with --corpus, http://HOST:PORT)."),
    ] = None,
    corpus: Annotated[
        str | None,
        typer.Option(help="Another corpus: emodb or tess (one zip; cremad and savee say how to get them)."),
    ] = None,
) -> None:
    """Download the official RAVDESS speech and song zips (resumable, MD5-checked), or --corpus.

    With --corpus the zip is used as it is: ser evaluate emodb=data/downloads/emodb.zip ...
    """
    if corpus is not None:
        _fetch_corpus(corpus.strip().lower(), out, base_url)
        return
    from components.data.fetch import fetch_ravdess

    paths = fetch_ravdess(out) if base_url is None else fetch_ravdess(out, base_url=base_url)
    for path in paths:
        typer.echo(f"{path}  ok")


def _fetch_corpus(name: str, out: Path, mirror: str | None) -> None:
    """``ser data fetch --corpus NAME``: one zip, its clip count and its licence."""
    from components.data.corpora.download import fetch_corpus
    from components.data.corpora.licences import corpus_licence

    fetched = fetch_corpus(name, out, mirror)
    part = "" if fetched.n_clips >= fetched.n_expected else f" (of {fetched.n_expected}: part of it only)"
    typer.echo(f"{fetched.path}  ok, {fetched.n_clips} {name} clips{part}; use it as {name}={fetched.path}")
    typer.echo(f"licence: {corpus_licence(name).licence}")


@app.command("validate")
def validate_cmd(
    data: Annotated[Path, typer.Argument(help="Folder or .zip of RAVDESS audio.")],
    out: Annotated[Path | None, typer.Option(help="Write clips.parquet and rejected.csv here.")] = None,
    docs: Annotated[Path | None, typer.Option(help="Write Great Expectations Data Docs here.")] = None,
    params: ParamsOption = PARAMS_FILE,
) -> None:
    """Check a folder or zip of clips; name each rejected file and its problem.

    Exits non-zero when the rejected share exceeds validate.max_rejected_share.
    """
    from flows.validate import check_data, save_report

    settings = load_settings(params).validate_
    _check_outputs((out, "--out", True), (docs, "--docs", True))
    report = check_data(data, settings, docs)
    if report.clips.empty and report.rejected.empty:
        raise SerError(f"{data}: no audio files in it; nothing to validate")
    typer.echo(report.summary())
    if out is not None:
        save_report(report, out)
    if not report.passed:  # the report is printed above: one line here, not the report again
        raise SerError(
            "data validation failed (see above): fix or remove the rejected files, "
            "or raise validate.max_rejected_share in params.yaml if they are expected"
        )


@app.command("featurize")
def featurize_cmd(
    data: Annotated[Path, typer.Argument(help="Folder or .zip of RAVDESS audio.")],
    out: Annotated[Path, typer.Option(help="Folder for the Parquet feature caches.")],
    sets: Annotated[str | None, typer.Option(help="Comma-separated feature sets (default: params).")] = None,
    n_jobs: Annotated[int | None, typer.Option(help="Worker processes (default: params).")] = None,
    params: ParamsOption = PARAMS_FILE,
) -> None:
    """Extract the feature caches for every readable clip under DATA (only new clips are computed)."""
    from flows.featurize import featurize_data

    settings = load_settings(params)
    _check_outputs((out, "--out", True))
    summary = featurize_data(
        data,
        out,
        settings,
        feature_sets=sets.split(",") if sets else None,
        n_jobs=n_jobs,
    )
    typer.echo(summary)


@app.command("evaluate")
def evaluate_cmd(
    data: Annotated[
        list[str],
        typer.Argument(
            help="Folder or .zip of RAVDESS audio; or CORPUS=PATH items, one per corpus: ravdess, emodb, "
            "cremad, tess, savee (folder or zip), custom or custom-NAME (a manifest .csv "
            "path,emotion,speaker[,gender] or a folder of emotion folders)."
        ),
    ],
    protocol: Annotated[
        str,
        typer.Option(
            help="actor-kfold | random | holdout; with CORPUS=PATH also leave-one-speaker-out, "
            "cross-corpus (--train, --test), leave-one-corpus-out."
        ),
    ] = "actor-kfold",
    train: Annotated[str | None, typer.Option(help="cross-corpus: the training corpus (ravdess).")] = None,
    test: Annotated[str | None, typer.Option(help="cross-corpus: the test corpus, e.g. emodb.")] = None,
    label_set: Annotated[
        str | None,
        typer.Option(
            help="CORPUS=PATH: native (one corpus on its own labels: RAVDESS 8, EmoDB 7 ...) or shared "
            "(the label map's; default for any corpus but RAVDESS alone)."
        ),
    ] = None,
    label_map: Annotated[
        Path | None,
        typer.Option(help="CORPUS=PATH: the shared label map (default: evaluate.label_map in --params)."),
    ] = None,
    normalize: Annotated[
        str | None,
        typer.Option(
            help="none | speaker | corpus (CORPUS=PATH only): z-scores of features, no labels; speaker "
            "is evaluate.speaker_norm (each actor's own clips, test actors included). Default: none, "
            "or for one RAVDESS folder evaluate.speaker_norm in --params.",
            show_default=False,
        ),
    ] = None,
    subset: Annotated[str, typer.Option(help="speech | song | all.")] = "all",
    models: Annotated[
        str, typer.Option(help="Comma-separated models (params.yaml sections).")
    ] = "rf,svm,logreg,mlp",
    test_actors: Annotated[str | None, typer.Option(help="holdout: test actors, e.g. 13-24.")] = None,
    n_folds: Annotated[
        int | None, typer.Option(help="actor-kfold: number of folds (default: params).")
    ] = None,
    features: Annotated[Path, typer.Option(help="Feature cache folder (reused across calls).")] = Path(
        ".ser-cache/features"
    ),
    n_workers: Annotated[int, typer.Option(help="Models scored at once, each in its own process.")] = 2,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the results as JSON here.")
    ] = None,
    params: ParamsOption = PARAMS_FILE,
    speaker_adapt: Annotated[
        bool,
        typer.Option(
            "--speaker-adapt", help="Re-centre each test actor on the training mean (speaker adaptation)."
        ),
    ] = False,
    mlflow: Annotated[
        bool,
        typer.Option(
            "--mlflow",
            help="cross-corpus, leave-one-corpus-out: also log the matrix (a metric per cell, the table, "
            "heat maps) as a run of <tracking.experiment>-cross-corpus in MLFLOW_TRACKING_URI, else "
            "--params' tracking.tracking_uri.",
        ),
    ] = False,
) -> None:
    """Score models on DATA under an evaluation protocol and print a results table.

    With CORPUS=PATH items, each corpus is featurized into FEATURES/<corpus>/ and the results
    say which label set the models predict; clips whose label the map sends nowhere are counted.
    Example: ser evaluate ravdess=RAVDESS/speech emodb=EMODB --protocol cross-corpus
    --train ravdess --test emodb --models svm --json out.json
    """
    from components.evaluation.metrics import format_table
    from components.evaluation.protocols import parse_actors
    from components.models import check_model_sections
    from components.runtime.files import write_json
    from flows.evaluate import evaluate_data

    settings = load_settings(params)
    check_model_sections(settings.models, str(params))
    _check_outputs((json_out, "--json", False), (features, "--features", True))
    overrides: dict[str, Any] = {}
    if test_actors:
        overrides["test_actors"] = list(parse_actors(test_actors))
    if n_folds is not None:
        if n_folds < 2:
            raise SerError(f"--n-folds {n_folds}: actor-kfold needs at least 2 folds")
        overrides["n_folds"] = n_folds
    settings = settings.model_copy(update={"evaluate": settings.evaluate.model_copy(update=overrides)})
    names = [name.strip() for name in models.split(",") if name.strip()]
    unknown = [name for name in names if name not in settings.models]
    if unknown:
        raise SerError(f"--models: no params.yaml section for {', '.join(unknown)}")
    if mlflow:
        _check_matrix_store(data, protocol, settings, params)
    if any("=" in item for item in data):
        label_map = label_map or params.resolve().parent / settings.evaluate.label_map
        options = {"train": train, "test": test, "label_set": label_set, "label_map_path": label_map}
        options |= {"normalization": normalize or "none", "subset": subset}
        report = _evaluate_corpora(data, features, settings, names, protocol, options, json_out)
        if mlflow:
            _log_matrix(report, data, settings, names, protocol, options, params)
        return
    if len(data) != 1:
        raise SerError("give one RAVDESS folder or zip, or CORPUS=PATH items (e.g. emodb=path/to/emodb)")
    if normalize not in (None, "none", "speaker"):
        raise SerError(f"--normalize {normalize}: one RAVDESS folder takes none or speaker, not corpus")
    if normalize is not None:
        speaker_norm = settings.evaluate.model_copy(update={"speaker_norm": normalize == "speaker"})
        settings = settings.model_copy(update={"evaluate": speaker_norm})
    if settings.evaluate.speaker_norm:
        typer.echo("speaker normalisation: each actor's features z-scored over their own clips (no labels)")
    runs = [(protocol, subset)]
    adapt = settings.evaluate.speaker_min_clips if speaker_adapt else None
    _, rows = evaluate_data(Path(data[0]), features, settings, names, runs, n_workers, adapt)
    if adapt is not None:
        typer.echo(f"speaker adaptation: test actors with {adapt}+ clips re-centred on the training mean")
    typer.echo(format_table(rows, list(rows[0])))
    if json_out is not None:
        write_json(json_out, rows)


def _evaluate_corpora(
    items: list[str],
    features: Path,
    settings: Settings,
    names: list[str],
    protocol: str,
    options: dict[str, Any],
    json_out: Path | None,
) -> dict[str, Any]:
    """``ser evaluate`` over CORPUS=PATH items (see components.data.corpora); returns the report."""
    from components.data.corpora import parse_sources
    from components.evaluation.metrics import format_table
    from components.runtime.files import write_json
    from flows.evaluate import evaluate_corpora

    sources = parse_sources(items)
    report = evaluate_corpora(sources, features, settings, names, protocol, **options)
    for corpus, counts in report["corpora"].items():
        left_out = counts.get("left_out_by_label")
        note = f", left out by the label map: {left_out}" if left_out else ""
        typer.echo(f"{corpus}: {counts['n_clips']} clips, {counts['n_rejected']} files rejected{note}")
    columns = ["model", "protocol", "split", "test", "n_test", "accuracy", "accuracy_sd", "uar", "uar_sd"]
    typer.echo(format_table(report["rows"], columns))
    typer.echo(f"label set: {report['label_set']} ({report['rows'][0]['classes']})")
    for row in report["rows"]:
        if row["untrained"]:  # components.evaluation.cross_corpus.MIN_CLASS_CLIPS
            typer.echo(f"{row['model']}: too few training clips, class not trained on in {row['untrained']}")
    if json_out is not None:
        write_json(json_out, report)
    return report


def _check_matrix_store(data: list[str], protocol: str, settings: Settings, params: Path) -> None:
    """``--mlflow`` before any work: a corpus protocol, and a store that can be used."""
    from components.evaluation.cross_corpus import CORPUS_PROTOCOLS
    from flows.evaluate import open_store

    if not any("=" in item for item in data) or protocol not in CORPUS_PROTOCOLS:
        raise SerError(f"--mlflow logs the matrix of CORPUS=PATH items under {' or '.join(CORPUS_PROTOCOLS)}")
    open_store(settings.tracking, params.resolve().parent)


def _log_matrix(
    report: dict[str, Any],
    items: list[str],
    settings: Settings,
    names: list[str],
    protocol: str,
    options: dict[str, Any],
    params: Path,
) -> None:
    """``--mlflow``: the matrix of the corpora report just printed, as one MLflow run."""
    from flows.evaluate import log_matrix_run

    run_params = {
        "protocol": protocol,
        "corpora": ",".join(items),
        "label_set": report["label_set"],
        "label_map": str(options["label_map_path"]) if report["label_set"] == "shared" else "",
        "models": ",".join(names),
        "normalization": options["normalization"],
        "subset": options["subset"],
    }
    if protocol == "cross-corpus":
        run_params |= {"train": options["train"], "test": options["test"]}
    run, experiment = log_matrix_run(report["matrix"], run_params, settings.tracking, params.resolve().parent)
    typer.echo(f"MLflow: run {run} in experiment {experiment}")


@app.command("predict")
def predict_cmd(
    inputs: Annotated[list[str], typer.Argument(help="Audio files, folders (searched recursively), globs.")],
    model: Annotated[
        str | None, typer.Option(help="MLflow model URI (default: models:/<tracking.model_name>@champion).")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write every result (windows too) as JSON here.")
    ] = None,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Write one row per file as CSV here.")] = None,
    batch_size: Annotated[int, typer.Option(help="Clips (or windows) per model call.")] = 32,
    windows: Annotated[
        bool, typer.Option("--windows", help="Also print the label of each window of long recordings.")
    ] = False,
    hop: Annotated[
        float | None, typer.Option(help="Seconds between windows (default: half the clip length).")
    ] = None,
    long: Annotated[
        float | None,
        typer.Option(help="Recordings longer than this (seconds) are windowed (default: 1.5 x clip length)."),
    ] = None,
    progress: Annotated[bool | None, typer.Option(help="Progress bar (default: 20 files or more).")] = None,
    threads: Annotated[
        int, typer.Option(help="CPU threads per operation of deep models (more only help big batches).")
    ] = 1,
    params: Annotated[
        Path | None,
        typer.Option(
            "--params", help="Settings file (default: params.yaml if there is one; else MLflow's defaults)."
        ),
    ] = None,
    speaker_pattern: Annotated[
        str | None,
        typer.Option(help=r"Adapt to speakers named by a regex on file names: '(?P<speaker>\d\d)\.wav$'."),
    ] = None,
    speaker_from: Annotated[
        str | None,
        typer.Option(help="Adapt to speakers: 'folder' (one folder each) or a CSV of path,speaker."),
    ] = None,
    speaker_min_clips: Annotated[
        int | None, typer.Option(help="Fewer files of a speaker: the plain model (default: the model's own).")
    ] = None,
) -> None:
    """Predict the emotion of audio files: any rate, channels and length; long ones in windows.

    With --speaker-pattern or --speaker-from, each speaker's files are re-centred on the model's
    training mean before scoring (speaker adaptation; one line per speaker on stderr).

    Prints file, emotion, confidence and top-3; RAVDESS-named files add the true label and a summary.

    Unreadable files get an error line; the exit status is 1 only if no file could be predicted.
    """
    from components.registry.model_io import load_model, use_store
    from components.serving.predict import (
        find_audio,
        format_results,
        format_summary,
        predict_files,
        set_torch_threads,
        summarize,
        write_results_csv,
        write_results_json,
    )

    _check_outputs((json_out, "--json", False), (csv_out, "--csv", False))
    set_torch_threads(threads)
    paths, missing = find_audio(inputs)
    if not paths:
        raise SerError("; ".join(r.error for r in missing if r.error) or "no input files")
    # none: a model used outside the project (MLFLOW_TRACKING_URI); a file named with --params must exist
    settings = find_settings(PARAMS_FILE) if params is None else load_settings(params)
    params = params or PARAMS_FILE
    model = model or _tracking(settings).champion_uri
    use_store(_store(settings), params.resolve().parent, required=model.startswith(("models:/", "runs:/")))
    loaded = load_model(model)
    about = loaded.description
    if about.get("version"):
        typer.echo(
            f"model: {about['name']} v{about['version']} ({', '.join(about['aliases']) or 'no alias'}), "
            f"{about['tags'].get('model_name', '?')}, clip {loaded.clip_dur:g} s",
            err=True,
        )
    checks = loaded.clip_checks  # the per-clip checks the model was trained with, not today's params.yaml
    if speaker_pattern is not None or speaker_from is not None:
        from components.serving.adaptation import predict_by_speaker

        options = {"clip_dur": loaded.clip_dur, "hop_dur": hop, "long_dur": long, "batch_size": batch_size}
        found, notes = predict_by_speaker(
            loaded, paths, speaker_pattern, speaker_from, speaker_min_clips, **options, checks=checks
        )
        for note in notes:
            typer.echo(note.line(), err=True)
        results = missing + found
    else:
        results = missing + predict_files(
            paths, loaded.predict_signals, loaded.clip_dur, hop, long, batch_size, progress, checks=checks
        )
    typer.echo(format_results(results, show_windows=windows))
    summary = summarize(results)
    if summary is not None:
        typer.echo("\n" + format_summary(summary))
    for result in results:
        if result.error:
            typer.echo(f"error: {result.error}", err=True)
    if json_out is not None:
        write_results_json(json_out, results, summary, about)
    if csv_out is not None:
        write_results_csv(csv_out, results)
    n_ok = sum(r.label is not None for r in results)
    if n_ok == 0:
        raise SerError(f"none of the {len(results)} inputs could be predicted (see the errors above)")
    if n_ok < len(results):
        typer.echo(f"{n_ok} of {len(results)} inputs predicted", err=True)


@registry_app.command("show")
def registry_show(
    name: Annotated[str | None, typer.Option(help="Registered model (default: tracking.model_name).")] = None,
    tags: Annotated[bool, typer.Option("--tags", help="Also list every tag of each version.")] = False,
    params: ParamsOption = PARAMS_FILE,
) -> None:
    """List the versions of the registered model: aliases, model, protocol, primary metric, tags."""
    from mlflow import MlflowClient

    from components.evaluation.metrics import format_table
    from components.registry.model_io import use_store, version_rows

    settings = find_settings(params)
    name = name or (settings or load_settings(params)).tracking.model_name
    use_store(_store(settings), params.resolve().parent)
    rows = version_rows(MlflowClient(), name)
    columns = ["version", "aliases", "model", "protocol", "metric", "data", "commit", "created"]
    typer.echo(f"{name}: {len(rows)} version(s)\n" + format_table(rows, columns))
    if tags:
        for row in rows:
            listed = ", ".join(f"{k}={v}" for k, v in sorted(row["tags"].items()))
            typer.echo(f"v{row['version']}: {listed}")


@registry_app.command("rollback")
def registry_rollback(
    name: Annotated[str | None, typer.Option(help="Registered model (default: tracking.model_name).")] = None,
    params: ParamsOption = PARAMS_FILE,
) -> None:
    """Make the version with alias 'previous' the champion again (the demoted one becomes 'previous')."""
    from mlflow import MlflowClient

    from components.registry.model_io import use_store
    from components.registry.promote import rollback

    settings = find_settings(params)
    name = name or (settings or load_settings(params)).tracking.model_name
    use_store(_store(settings), params.resolve().parent)
    decision = rollback(MlflowClient(), name)
    demoted = f"; v{decision.replaced} is now 'previous'" if decision.replaced else ""
    typer.echo(f"{name}: champion is v{decision.version}{demoted}")


def _tracking(settings: Settings | None) -> Tracking:
    """The ``tracking`` settings; their defaults when there is no params file."""
    return settings.tracking if settings else Tracking()


def _store(settings: Settings | None) -> Tracking | None:
    """The ``tracking`` settings that name the MLflow store, or None without a params file."""
    return settings.tracking if settings else None


def _check_outputs(*outputs: tuple[Path | None, str, bool]) -> None:
    """Refuse unwritable outputs before any work: ``(path, option, is_folder)``, None = not asked for."""
    for path, option, folder in outputs:
        if path is not None:
            check_output(path, option, folder=folder)


def main() -> None:
    """Console entry point: a user's error is one line on stderr and exit status 1; Ctrl-C exits 130."""
    stop_on_interrupt()
    exit_on_error(app)


if __name__ == "__main__":
    main()
