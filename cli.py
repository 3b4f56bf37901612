"""The ``ser`` command: every pipeline stage, usable outside DVC."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from components.errors import SerError
from components.paths import PARAMS_FILE
from components.runtime.files import exit_on_error
from components.settings import Settings, Tracking, find_settings, load_settings

app = typer.Typer(
    help="Speech emotion recognition on RAVDESS: data, validation, features, models.",
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
    base_url: Annotated[str | None, typer.Option(help="Mirror to download from (default: Zenodo).")] = None,
) -> None:
    """Download the official RAVDESS speech and song zips (resumable, MD5-checked)."""
    from components.data.fetch import fetch_ravdess

    paths = fetch_ravdess(out) if base_url is None else fetch_ravdess(out, base_url=base_url)
    for path in paths:
        typer.echo(f"{path}  ok")


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

    report = check_data(data, load_settings(params).validate_.model_dump(), docs)
    typer.echo(report.summary())
    if out is not None:
        save_report(report, out)
    report.raise_if_failed()


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

    settings = load_settings(params).as_params()
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
    data: Annotated[Path, typer.Argument(help="Folder or .zip of RAVDESS audio.")],
    protocol: Annotated[str, typer.Option(help="actor-kfold | random | holdout.")] = "actor-kfold",
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
) -> None:
    """Score models on DATA under an evaluation protocol and print a results table."""
    from components.evaluation.metrics import format_table
    from components.evaluation.protocols import parse_actors
    from components.models import check_model_sections
    from components.runtime.files import write_json
    from flows.evaluate import evaluate_data

    loaded = load_settings(params)
    check_model_sections(loaded.models, str(params))
    settings = loaded.as_params()
    if test_actors:
        settings["evaluate"]["test_actors"] = list(parse_actors(test_actors))
    if n_folds:
        settings["evaluate"]["n_folds"] = n_folds
    names = [name.strip() for name in models.split(",") if name.strip()]
    unknown = [name for name in names if name not in settings]
    if unknown:
        raise SerError(f"--models: no params.yaml section for {', '.join(unknown)}")
    _, rows = evaluate_data(
        data, features, settings, names, [{"protocol": protocol, "subset": subset}], n_workers=n_workers
    )
    typer.echo(format_table(rows, list(rows[0])))
    if json_out is not None:
        write_json(json_out, rows)


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
    params: ParamsOption = PARAMS_FILE,
) -> None:
    """Predict the emotion of audio files: any rate, channels and length; long ones in windows.

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

    set_torch_threads(threads)
    paths, missing = find_audio(inputs)
    if not paths:
        raise SerError("; ".join(r.error for r in missing if r.error) or "no input files")
    settings = find_settings(params)  # none: a model used outside the project (MLFLOW_TRACKING_URI)
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
    silence = loaded.silence  # the test the model was trained with, not today's params.yaml
    results = missing + predict_files(
        paths, loaded.predict_signals, loaded.clip_dur, hop, long, batch_size, progress, silence=silence
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


def _store(settings: Settings | None) -> dict | None:
    """The ``tracking`` settings that name the MLflow store, or None without a params file."""
    return settings.tracking.model_dump() if settings else None


def main() -> None:
    """Console entry point: a user's error is one line on stderr and exit status 1."""
    exit_on_error(app)


if __name__ == "__main__":
    main()
