"""The experiment harness: the configurations one config file lists, scored on validation actors only.

    python -m experiments experiments/configs/compare_features.yaml [--features data/features] [--workers 2]

A question that needs code rather than a parameter sweep (a sweep is ``dvc exp run -S ...``) is a
config file in ``experiments/configs/``: the model configurations to compare, the subsets and
normalisations to compare them on. Every configuration is fitted on the training actors of each
actor-kfold fold (``evaluate.n_folds`` and ``evaluate.n_val_actors`` of params.yaml) and scored on
that fold's validation actors, with the pipeline's own ``ModelSpec``, fitting and metrics. The
fold's test actors are never read: what a report says was chosen on them stays an honest test
for the pipeline's ``evaluate``. Features are the featurize stage's tables (``dvc repro
featurize`` or ``ser featurize --out DIR``).

Each configuration × subset × normalisation is an MLflow run (with a child run per fold) nested
under one parent run named after the config, in the experiment ``<tracking.experiment>-experiments``
of the store ``MLFLOW_TRACKING_URI`` or ``tracking.tracking_uri`` names. Writes
``reports/<config name>.md`` and ``.json``, stamped with the commit and the command.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from mlflow import MlflowClient

from components.errors import SerError
from components.evaluation.evaluate import Evaluation, ModelSpec, evaluate_splits, prepare_data, results_table
from components.evaluation.metrics import format_table
from components.evaluation.protocols import Split, actor_kfold
from components.paths import FEATURES_DIR
from components.runtime.files import exit_on_error, write_text
from components.settings import Tracking, load_params
from components.tracking.runs import experiment_id, git_commit, log_evaluation, start_run, store_uri

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = "actor-kfold-validation"  # the protocol name the runs carry: scored on validation actors
CONFIG_KEYS = {"question", "configurations", "subsets", "speaker_norm", "baseline"}


def load_config(path: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Read a config file: ``question``, ``configurations`` and, optionally, ``subsets``, ``speaker_norm``
    (a list of booleans) and ``baseline`` (a configuration name; default the first).

    A configuration is a model section as in params.yaml (``kind``, ``features``, settings), or
    ``{params: <section>}`` (a params.yaml section, whose keys the entry's other keys override).

    Raises:
        SerError: An unknown key, no configurations, or an unknown params section or baseline.
    """
    config = yaml.safe_load(Path(path).read_text()) or {}
    unknown = sorted(set(config) - CONFIG_KEYS)
    if unknown:
        raise SerError(f"{path}: unknown key(s) {unknown}; a config takes {sorted(CONFIG_KEYS)}")
    if not config.get("configurations"):
        raise SerError(f"{path}: no configurations to compare")
    runs = [run["subset"] for run in params["evaluate"]["runs"] if run["protocol"] == "actor-kfold"]
    config.setdefault("subsets", runs or ["all"])
    config.setdefault("speaker_norm", [bool(params["evaluate"]["speaker_norm"])])
    config.setdefault("baseline", next(iter(config["configurations"])))
    if config["baseline"] not in config["configurations"]:
        raise SerError(f"{path}: baseline {config['baseline']!r} is not one of the configurations")
    config["name"] = Path(path).stem
    return config


def model_spec(name: str, entry: dict[str, Any], params: dict[str, Any]) -> ModelSpec:
    """The ``ModelSpec`` of one configuration, as the pipeline builds it from a params section."""
    entry = dict(entry)
    base = entry.pop("params", None)
    if base is not None:
        if base not in params or not isinstance(params[base], dict):
            raise SerError(f"configuration {name!r}: params.yaml has no model section {base!r}")
        entry = {**params[base], **entry}
    return ModelSpec.from_params(name, entry)


def validation_splits(splits: list[Split]) -> list[Split]:
    """Each fold's training actors against its validation actors; its test actors are left out.

    The returned split's ``test`` rows are the fold's validation rows (what is scored) and its
    ``test_actors`` the validation actors; it has no validation rows, so deep models do not early-stop.
    """
    inner = []
    for split in splits:
        if not len(split.val):
            raise SerError("evaluate.n_val_actors is 0: there are no validation actors to score on")
        empty = np.array([], dtype=np.int64)
        inner.append(Split(f"{split.name}-val", split.train, empty, split.val, split.val_actors, ()))
    return inner


def score(job: tuple[ModelSpec, Path, str, bool, int, int]) -> tuple[Evaluation, list[dict[str, Any]]]:
    """Fit and score one configuration on one subset's validation actors, fold by fold."""
    spec, features, subset, norm, n_folds, n_val_actors = job
    data = prepare_data(spec, features, subset, norm)
    folds = actor_kfold(data.labels, n_folds=n_folds, n_val_actors=n_val_actors)
    result = evaluate_splits(spec, data, validation_splits(folds), PROTOCOL, subset)
    actors = data.labels["actor"].to_numpy()
    record = [
        {
            "fold": split.name,
            "test_actors_left_out": list(split.test_actors),
            "val_actors_scored": sorted({int(a) for a in actors[split.val]}),
            "train_actors": sorted({int(a) for a in actors[split.train]}),
        }
        for split in folds
    ]
    return result, record


def run_experiment(
    config: dict[str, Any],
    params: dict[str, Any],
    features: Path,
    client: MlflowClient,
    workers: int = 1,
    command: str = "",
) -> dict[str, Any]:
    """Score every configuration × subset × normalisation, log them to MLflow, return the summary."""
    evaluate = params["evaluate"]
    n_folds, n_val_actors = int(evaluate["n_folds"]), int(evaluate["n_val_actors"])
    metric = evaluate["primary_metric"]
    jobs = []
    for norm in config["speaker_norm"]:
        for name, entry in config["configurations"].items():
            spec = model_spec(name + ("+speaker_norm" if norm else ""), entry, params)
            jobs += [
                (spec, features, subset, bool(norm), n_folds, n_val_actors) for subset in config["subsets"]
            ]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            outcomes = list(pool.map(score, jobs))
    else:
        outcomes = [score(job) for job in jobs]
    tracking = Tracking.model_validate(params["tracking"])
    experiment = experiment_id(client, tracking, f"{tracking.experiment}-experiments")
    tags = {"experiment_config": config["name"], "git_commit": git_commit(), "command": command}
    parent = start_run(client, experiment, config["name"], tags=tags)
    client.log_dict(parent, config, "config.yaml")
    for key, value in {"n_folds": n_folds, "n_val_actors": n_val_actors, "features_dir": features}.items():
        client.log_param(parent, key, str(value))
    folds = {}
    for (spec, _, subset, norm, *_), (result, record) in zip(jobs, outcomes, strict=True):
        log_evaluation(
            client, experiment, parent, spec, result, {"speaker_norm": norm, "config": config["name"]}
        )
        folds[f"{spec.name}/{subset}"] = record
    client.log_dict(parent, folds, "folds.json")
    client.set_terminated(parent)
    rows = results_table([result for result, _ in outcomes], metric)
    return {
        **{"config": config["name"], "question": config.get("question", ""), "baseline": config["baseline"]},
        **{"command": command, "commit": git_commit(), "parent_run_id": parent, "primary_metric": metric},
        **{"n_folds": n_folds, "n_val_actors": n_val_actors, "rows": rows, "folds": folds},
    }


def render(summary: dict[str, Any]) -> str:
    """The Markdown report: stamp, question, how it was scored, the table with differences to the baseline."""
    metric, baseline = summary["primary_metric"], summary["baseline"]
    base = {(r["subset"], r["model"].endswith("+speaker_norm")): r[metric] for r in summary["rows"]
            if r["model"].removesuffix("+speaker_norm") == baseline}  # fmt: skip
    rows = []
    for r in summary["rows"]:
        reference = base.get((r["subset"], r["model"].endswith("+speaker_norm")))
        delta = None if reference is None else round(r[metric] - reference, 4)
        rows.append({**r, f"Δ{metric} vs {baseline}": delta})
    columns = ["model", "subset", "uar", "uar_sd", "accuracy", "accuracy_sd", f"Δ{metric} vs {baseline}"]
    return "\n".join([
        f"# {summary['config']}: {summary['question']}".rstrip(": "),
        "",
        f"> Produced at commit {summary['commit'][:7]} by: `{summary['command']}`",
        "",
        f"Each configuration is fitted on the training actors of each of {summary['n_folds']} actor-kfold",
        f"folds and scored on that fold's {summary['n_val_actors']} validation actor(s); the fold's test",
        f"actors are never read. Mean ± sd over folds; MLflow parent run `{summary['parent_run_id']}`.",
        "",
        format_table(rows, columns),
        "",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments", description=__doc__.splitlines()[0])
    parser.add_argument(
        "config", type=Path, help="a config file, e.g. experiments/configs/compare_features.yaml"
    )
    parser.add_argument(
        "--features", "--data", type=Path, default=FEATURES_DIR, help="the featurize stage's tables"
    )
    parser.add_argument(
        "--params", type=Path, default=ROOT / "params.yaml", help="fold and tracking settings"
    )
    parser.add_argument("--workers", type=int, default=1, help="configurations scored at once (processes)")
    parser.add_argument("--reports", type=Path, default=ROOT / "reports", help="where the report goes")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "experiments", *(sys.argv[1:] if argv is None else argv)])
    params = load_params(args.params)
    config = load_config(args.config, params)
    client = MlflowClient(
        store_uri(Tracking.model_validate(params["tracking"]), args.params.resolve().parent)
    )
    summary = run_experiment(config, params, args.features, client, args.workers, command)
    report = render(summary)
    write_text(args.reports / f"{config['name']}.md", report)
    write_text(args.reports / f"{config['name']}.json", json.dumps(summary, indent=1, default=str))
    print(report)


if __name__ == "__main__":
    exit_on_error(main)
