"""Flow ``retrain``: the pipeline as a named DVC experiment, then a summary of what changed and was promoted.

DVC decides what re-runs, so ``dvc repro`` and this flow build the same artifacts from one
pipeline definition and share its caches; the ``train`` stage refits the best model, registers
it and moves ``champion`` only when it wins. The run is ``dvc exp run --name retrain-<time>
--set-param ...`` in the checkout itself: ``dvc exp show`` lists each retrain beside the
parameters it set and the metrics that decided promotion. Like any workspace experiment (not
``--temp``), the parameters it sets stay in params.yaml afterwards, so the workspace, its outputs
and the registry agree on the settings that produced them; a retrain without parameters leaves
params.yaml unchanged. DVC records an experiment against a git commit: the checkout must have one.

This flow adds what a scheduled run needs: one retrain at a time per workspace, and Prefect
artifacts (a markdown summary with the data version, the stages that changed, the promotion
decision and links to the MLflow runs; the candidates as a table; the model version as a link).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from prefect import flow, get_run_logger

from components.errors import SerError
from components.evaluation.metrics import format_table
from components.paths import METRICS_DIR, PARAMS_FILE
from components.runtime.files import exit_on_error, project_root
from components.runtime.locks import hold_lock
from components.settings import Settings, load_settings
from flows import fail_cleanly, run_flow

LOCK_TARGET = Path(".dvc/tmp/retrain")  # lock file .dvc/tmp/.retrain.lock: DVC scratch, never versioned
DVC_LOCKED = "Unable to acquire lock"  # what dvc prints when another dvc process holds the workspace
NO_COMMIT = "Empty git repo"  # what dvc exp run prints in a repository without a commit
ARTIFACT_KEY = "retrain-summary"
TABLE_KEY = "retrain-candidates"
LINK_KEY = "retrain-model-version"


@dataclass
class ExperimentLog:
    """What one ``dvc exp run`` did: its name, the stages whose dvc.lock entry changed, its time."""

    name: str
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


def overrides(
    params: dict[str, Any],
    source: str | None,
    models: list[str] | None,
    protocol: str | None,
    profile: str | None = None,
) -> dict[str, Any]:
    """The parameters this run sets (dotted key → value), each only where it differs from ``params``.

    ``models`` sets the model list of the profile in effect: ``train.quick.models`` under
    ``quick``, ``train.models`` under ``full``. ``protocol`` moves that protocol to the front of
    ``evaluate.runs`` (the first pair ranks the candidates and gates promotion).

    Raises:
        SerError: A model that names no params.yaml model section.
    """
    wanted: dict[str, Any] = {}
    if profile is not None:
        wanted["train.profile"] = profile
    if source is not None:
        wanted["ingest.source"] = source
    if models is not None:
        unknown = [name for name in models if "kind" not in (params.get(name) or {})]
        if unknown or not models:
            raise SerError(f"models {models}: no params.yaml model section for {', '.join(unknown) or '[]'}")
        quick = (profile or params["train"].get("profile", "full")) == "quick"
        wanted["train.quick.models" if quick else "train.models"] = list(models)
    if protocol is not None:
        runs = params["evaluate"]["runs"]
        primary = {"protocol": protocol, "subset": runs[0]["subset"]}
        wanted["evaluate.runs"] = [primary, *(run for run in runs if run != primary)]
    return {key: value for key, value in wanted.items() if _plain(lookup(params, key)) != _plain(value)}


def describe_changes(params: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``key: old → new`` for each parameter set, for the summary."""
    return [f"{key}: {_plain(lookup(params, key))} → {_plain(value)}" for key, value in wanted.items()]


def lookup(params: dict[str, Any], dotted: str) -> Any:
    """``params["a"]["b"]`` for ``"a.b"`` (None where a level is missing)."""
    node: Any = params
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def hydra_value(value: Any) -> str:
    """``value`` in the override grammar of ``dvc exp run --set-param`` (Hydra's), strings quoted.

    Inside a quoted string only quotes, and backslashes before a quote or the closing quote,
    are escaped; other backslashes are literal.
    """
    if isinstance(value, str):
        escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
        escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
        return f"'{escaped}'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{hydra_value(item)}" for key, item in value.items()) + "}"
    raise SerError(f"cannot pass {value!r} to dvc exp run --set-param")


def _plain(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


def experiment_name(now: datetime | None = None) -> str:
    """A unique, sortable experiment name: ``retrain-20250106-040000`` (UTC)."""
    return f"retrain-{(now or datetime.now(UTC)):%Y%m%d-%H%M%S}"


def dvc_command() -> str:
    """The ``dvc`` of this environment (a served flow may run without the venv on PATH)."""
    local = Path(sys.executable).parent / "dvc"
    return str(local) if local.exists() else (shutil.which("dvc") or "dvc")


def read_lock(project: Path) -> dict[str, Any]:
    """The stages recorded in ``dvc.lock`` ({} before the first run)."""
    path = project / "dvc.lock"
    return (yaml.safe_load(path.read_text()) or {}).get("stages", {}) if path.exists() else {}


def changed_stages(before: dict[str, Any], after: dict[str, Any], order: list[str]) -> tuple[list, list]:
    """Stages whose dvc.lock entry changed (their inputs or outputs did), and the others, in ``order``.

    ``ingest`` runs every time (DVC cannot see an outside folder change) but leaves its entry
    as it was when the source is unchanged: it then counts as unchanged.
    """
    ran = [stage for stage in order if stage in after and before.get(stage) != after[stage]]
    skipped = [stage for stage in order if stage in after and stage not in ran]
    return ran, skipped


def run_experiment(
    project: Path, name: str, wanted: dict[str, Any], timeout_s: float
) -> tuple[ExperimentLog, str]:
    """``dvc exp run --name NAME --set-param KEY=VALUE ...`` in ``project``.

    Raises:
        SerError: With DVC's last lines when it fails, or a message saying what to do when
            another dvc process holds the workspace, the checkout has no commit, or the run
            passes ``timeout_s``.
    """
    before = read_lock(project)
    command = [dvc_command(), "exp", "run", "--name", name]
    for key, value in wanted.items():
        command += ["--set-param", f"{key}={hydra_value(value)}"]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as err:
        raise SerError(
            f"dvc exp run in {project} ran past retrain.timeout_s ({timeout_s:g} s); stopped"
        ) from err
    output = done.stdout + done.stderr
    if done.returncode != 0:
        if DVC_LOCKED in output:
            raise SerError(
                f"another dvc process is running in {project} (DVC's lock is held); "
                "wait for it to finish, then retrain again"
            )
        if NO_COMMIT in output:
            raise SerError(
                f"{project} has no git commit: DVC records an experiment against one; "
                "commit the project (git add -A && git commit), then retrain again"
            )
        lines = [line for line in output.splitlines() if line.strip() and "%|" not in line]  # no tqdm bars
        tail = "\n".join(lines[-15:])
        raise SerError(f"dvc exp run failed in {project}:\n{tail}")
    order = list((yaml.safe_load((project / "dvc.yaml").read_text()) or {}).get("stages", {}))
    ran, skipped = changed_stages(before, read_lock(project), order)
    return ExperimentLog(name, ran, skipped, round(time.perf_counter() - started, 1)), output


def read_metrics(project: Path, stage: str) -> dict[str, Any]:
    """A stage's DVC metrics file ({} when it has none yet)."""
    path = project / METRICS_DIR / f"{stage}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def mlflow_links(project: Path, settings: Settings, version: str | None) -> dict[str, str]:
    """Browser links to the registered version, its refit run and the pipeline's parent run."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from components.tracking.runs import store_uri

    if not version:
        return {}
    uri = store_uri(settings.tracking, project)
    base = uri if uri.startswith(("http://", "https://")) else settings.retrain.mlflow_ui
    base = base.rstrip("/")
    name = settings.tracking.model_name
    client = MlflowClient(uri)
    try:
        model = client.get_model_version(name, version)
        run = client.get_run(model.run_id)
    except MlflowException:
        return {}
    experiment = run.info.experiment_id
    links = {
        f"model {name} v{version}": f"{base}/#/models/{name}/versions/{version}",
        "refit run": f"{base}/#/experiments/{experiment}/runs/{model.run_id}",
    }
    parent = run.data.tags.get("pipeline_run")
    if parent:
        links["pipeline run"] = f"{base}/#/experiments/{experiment}/runs/{parent}"
    return links


def summarize(
    log: ExperimentLog,
    changes: list[str],
    before: str | None,
    after: str | None,
    project: Path,
    links: dict[str, str],
) -> dict[str, Any]:
    """What the run changed, trained and decided, as plain data."""
    summary: dict[str, Any] = {
        "data_version": {"before": before, "after": after, "changed": before != after},
        "experiment": log.name,
        "params_changed": changes,
        "stages_run": log.ran,  # their dvc.lock entries changed
        "stages_skipped": log.skipped,
        "seconds": log.seconds,
        "links": links,
    }
    if "ingest" in log.ran:
        ingest = read_metrics(project, "ingest")
        summary["ingest"] = {k: ingest.get(k) for k in ("n_files", "n_added", "n_changed", "n_removed")}
    if "featurize" in log.ran:
        sets = read_metrics(project, "featurize").get("sets", {})
        summary["featurize"] = {
            name: {"n_extracted": s["n_extracted"], "n_reused": s["n_reused"]} for name, s in sets.items()
        }
    if "train" in log.ran:
        train = read_metrics(project, "train")
        summary |= {"candidates": train["results"], "best": train["best"], "registry": train["registry"]}
    return summary


def summary_markdown(summary: dict[str, Any], primary_metric: str) -> str:
    """The Prefect artifact: one page a reviewer reads to know what this retrain did."""
    data = summary["data_version"]
    lines = ["# Retrain summary", ""]
    if data["changed"]:
        before = f"`{data['before']}`" if data["before"] else "none"
        lines.append(f"- **Data**: {before} → `{data['after']}`")
    else:
        lines.append(f"- **Data**: unchanged (`{data['after']}`)")
    for change in summary["params_changed"]:
        lines.append(f"- **Parameter**: `{change}`")
    ran = ", ".join(summary["stages_run"]) or "none"
    skipped = ", ".join(summary["stages_skipped"]) or "none"
    lines += [f"- **Stages re-run**: {ran}", f"- **Unchanged, skipped**: {skipped}"]
    lines.append(
        f"- **DVC experiment**: `{summary['experiment']}` ({summary['seconds']:.1f} s; "
        "`dvc exp show` lists it with its parameters and metrics)"
    )
    if "ingest" in summary:
        i = summary["ingest"]
        lines.append(
            f"- **Ingest**: {i['n_added']} added, {i['n_changed']} changed, {i['n_removed']} removed "
            f"({i['n_files']} files)"
        )
    if "featurize" in summary:
        parts = [
            f"{n} {s['n_extracted']} new / {s['n_reused']} reused" for n, s in summary["featurize"].items()
        ]
        lines.append(f"- **Featurize**: {'; '.join(parts)}")
    if "registry" not in summary:
        lines += ["", "Nothing was retrained: the features and training settings are unchanged."]
    else:
        decision = summary["registry"]
        verdict = "**promoted to `champion`**" if decision["promoted"] else "**not promoted**"
        best = summary["best"]
        lines += [
            "",
            "## Promotion",
            "",
            f"Best candidate `{best['model']}` ({primary_metric} {best[primary_metric]:.4f}) "
            f"registered as version {decision['version']}: {verdict}. {decision['reason']}.",
            "",
            "## Candidates",
            "",
        ]
        columns = [
            "model",
            "protocol",
            "subset",
            "n_folds",
            "accuracy",
            "uar",
            "weighted_f1",
            "train_seconds",
        ]
        lines.append(format_table(summary["candidates"], columns))
    if summary["links"]:
        lines += ["", "## MLflow", ""]
        lines += [f"- [{label}]({url})" for label, url in summary["links"].items()]
    return "\n".join(lines) + "\n"


@flow(name="retrain", log_prints=True)
@fail_cleanly
def retrain(
    source: str | None = None,
    models: list[str] | None = None,
    protocol: Literal["actor-kfold", "holdout", "random"] | None = None,
    profile: Literal["quick", "full"] | None = None,
    project_dir: str | None = None,
    wait_s: float | None = None,
) -> dict[str, Any]:
    """Re-run the pipeline on the current source data and promote the new model if it wins.

    Args:
        source: Audio source (``ingest.source``): ``demo``, ``zenodo``, or a folder or .zip.
        models: Models to train, each a params.yaml section (``train.models``, or
            ``train.quick.models`` under the quick profile).
        protocol: Evaluation protocol that ranks the candidates and gates promotion
            (``actor-kfold``, ``holdout`` or ``random``); the other configured runs stay.
        profile: ``full`` (every configured model and run) or ``quick`` (``train.profile``).
        project_dir: The checkout to run in (default: ``SER_PROJECT_DIR``, else the working folder).
        wait_s: Seconds to wait for another retrain of this checkout to finish (``retrain.wait_s``).

    Left out, each parameter keeps its params.yaml value; those given are set with
    ``dvc exp run --set-param`` and stay in params.yaml afterwards.
    """
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

    from components.tracking.runs import raw_data_version

    logger = get_run_logger()
    project = project_root(project_dir)
    params_file = project / PARAMS_FILE
    settings = load_settings(params_file)  # what follows reads none of the overridden keys
    if wait_s is None:
        wait_s = settings.retrain.wait_s
    with hold_lock(project / LOCK_TARGET, f"retraining in {project}", wait_s=wait_s):
        params = yaml.safe_load(params_file.read_text())
        wanted = overrides(params, source, models, protocol, profile)
        changes = describe_changes(params, wanted)
        before = raw_data_version(project / "dvc.lock")
        name = experiment_name()
        logger.info("dvc exp run %s in %s%s", name, project, f" ({'; '.join(changes)})" if changes else "")
        log, output = run_experiment(project, name, wanted, settings.retrain.timeout_s)
        logger.info("%s done in %.1f s: changed %s", name, log.seconds, ", ".join(log.ran) or "nothing")
        logger.info("dvc exp run output (last lines):\n%s", "\n".join(output.splitlines()[-40:]))
        version = (
            read_metrics(project, "train").get("registry", {}).get("version") if "train" in log.ran else None
        )
        links = mlflow_links(project, settings, str(version) if version else None)
        summary = summarize(log, changes, before, raw_data_version(project / "dvc.lock"), project, links)
    text = summary_markdown(summary, settings.evaluate.primary_metric)
    create_markdown_artifact(
        markdown=text, key=ARTIFACT_KEY, description="What this retrain changed and decided"
    )
    if "candidates" in summary:
        create_table_artifact(
            table=summary["candidates"],
            key=TABLE_KEY,
            description=f"{name}: every model × protocol × subset, by {settings.evaluate.primary_metric}",
        )
    model_link = next(((label, url) for label, url in links.items() if label.startswith("model ")), None)
    if model_link:
        create_link_artifact(
            link=model_link[1],
            link_text=model_link[0],
            key=LINK_KEY,
            description="The version this retrain registered",
        )
    logger.info("%s", text)
    return summary


def main() -> None:
    """``python -m flows.retrain``: one retrain now, with params.yaml as it is."""
    run_flow(retrain)  # the flow logs its summary


if __name__ == "__main__":
    exit_on_error(main)
