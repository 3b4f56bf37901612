"""Flow ``retrain``: the DVC pipeline end to end, then a summary of what changed and what was promoted.

DVC decides what re-runs (``dvc repro``), so ``dvc repro`` and this flow build the same artifacts
from one pipeline definition and share its caches; the ``train`` stage refits the best model,
registers it and moves ``champion`` only when it wins. This flow adds what a scheduled run needs:
parameter overrides written to params.yaml (as ``dvc exp run --set-param`` does), one retrain at
a time per workspace, and a Prefect markdown artifact with the data version, the stages that ran,
the candidates' metrics, the promotion decision and links to the MLflow runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from prefect import flow, get_run_logger

from components.errors import SerError
from components.evaluation.metrics import format_table
from components.paths import METRICS_DIR, PARAMS_FILE
from components.runtime.files import exit_on_error, project_root, write_text
from components.runtime.locks import hold_lock
from components.settings import load_settings
from flows import fail_cleanly, run_flow

LOCK_TARGET = Path(".dvc/tmp/retrain")  # lock file .dvc/tmp/.retrain.lock: DVC scratch, never versioned
DVC_LOCKED = "Unable to acquire lock"  # what dvc prints when another dvc process holds the workspace
ARTIFACT_KEY = "retrain-summary"


@dataclass
class ReproLog:
    """What one ``dvc repro`` did, read from its output."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    ingest_unchanged: bool = False
    seconds: float = 0.0


def parse_repro(output: str) -> ReproLog:
    """The stages ``dvc repro`` ran and skipped, in order.

    ``ingest`` always runs (DVC cannot see an outside folder change) and says "nothing to do"
    when its source is unchanged; it then counts as skipped.
    """
    log = ReproLog()
    for line in output.splitlines():
        if line.startswith("Running stage '"):
            log.ran.append(line.split("'")[1])
        elif line.startswith("Stage '") and "didn't change, skipping" in line:
            log.skipped.append(line.split("'")[1])
    log.ingest_unchanged = "unchanged since the last run; nothing to do" in output
    if log.ingest_unchanged and "ingest" in log.ran:
        log.ran.remove("ingest")
        log.skipped.insert(0, "ingest")
    return log


def apply_overrides(
    params_file: Path, source: str | None, models: list[str] | None, protocol: str | None
) -> list[str]:
    """Write the run's parameters into params.yaml, keeping its layout and comments; returns what changed.

    The values stay there afterwards, as with ``dvc exp run --set-param``: the workspace then
    says which settings produced its outputs, and DVC sees exactly which stages they touch.
    """
    text = params_file.read_text()
    params = yaml.safe_load(text)
    wanted: list[tuple[str, str, Any]] = []
    if source is not None:
        wanted.append(("ingest", "source", source))
    if models is not None:
        unknown = [name for name in models if "kind" not in (params.get(name) or {})]
        if unknown or not models:
            raise SerError(f"models {models}: no params.yaml model section for {', '.join(unknown) or '[]'}")
        wanted.append(("train", "models", list(models)))
    if protocol is not None:
        runs = params["evaluate"]["runs"]
        primary = {"protocol": protocol, "subset": runs[0]["subset"]}
        wanted.append(("evaluate", "runs", [primary, *(run for run in runs if run != primary)]))
    changes = []
    for section, key, value in wanted:
        old = params[section][key]
        if _plain(old) != _plain(value):
            text = set_value(text, section, key, value)
            changes.append(f"{section}.{key}: {_plain(old)} → {_plain(value)}")
    if changes:
        written = yaml.safe_load(text)
        if any(_plain(written[s][k]) != _plain(v) for s, k, v in wanted):  # never write a wrong file
            raise SerError(f"{params_file}: could not set {', '.join(changes)}; edit it by hand")
        write_text(params_file, text)
    return changes


def set_value(text: str, section: str, key: str, value: Any) -> str:
    """``text`` with ``section.key`` set to ``value`` on one line, its comment kept.

    The key's old value may run over several indented lines (a block list); they are replaced.
    """
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith(f"{section}:")), None)
    if start is None:
        raise SerError(f"params.yaml has no section {section!r}")
    for i in range(start + 1, len(lines)):
        line = lines[i]
        if line.strip() and not line.startswith((" ", "#")):
            break  # the next section
        stripped = line.lstrip(" ")
        if not stripped.startswith(f"{key}:"):
            continue
        indent = len(line) - len(stripped)
        end = i + 1
        while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > indent):
            end += 1
        while end > i + 1 and not lines[end - 1].strip():
            end -= 1  # keep the blank lines before the next key or section
        comment = line.split("  #", 1)[1].rstrip("\n") if "  #" in line else ""
        flow_value = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
        flow_value = flow_value.removesuffix("\n...").strip()
        new = f"{' ' * indent}{key}: {flow_value}" + (f"  #{comment}" if comment else "") + "\n"
        return "".join([*lines[:i], new, *lines[end:]])
    raise SerError(f"params.yaml has no key {section}.{key}")


def _plain(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def dvc_command() -> str:
    """The ``dvc`` of this environment (a served flow may run without the venv on PATH)."""
    local = Path(sys.executable).parent / "dvc"
    return str(local) if local.exists() else (shutil.which("dvc") or "dvc")


def run_repro(project: Path, timeout_s: float) -> tuple[ReproLog, str]:
    """Run ``dvc repro`` in ``project``; a failure becomes a ``SerError`` with DVC's last lines."""
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [dvc_command(), "repro"],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as err:
        raise SerError(
            f"dvc repro in {project} ran past retrain.timeout_s ({timeout_s:g} s); stopped"
        ) from err
    output = done.stdout + done.stderr
    if done.returncode != 0:
        if DVC_LOCKED in output:
            raise SerError(
                f"another dvc process is running in {project} (DVC's lock is held); "
                "wait for it to finish, then retrain again"
            )
        lines = [line for line in output.splitlines() if line.strip() and "%|" not in line]  # no tqdm bars
        tail = "\n".join(lines[-15:])
        raise SerError(f"dvc repro failed in {project}:\n{tail}")
    log = parse_repro(output)
    log.seconds = round(time.perf_counter() - started, 1)
    return log, output


def read_metrics(project: Path, stage: str) -> dict[str, Any]:
    """A stage's DVC metrics file ({} when it has none yet)."""
    path = project / METRICS_DIR / f"{stage}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def mlflow_links(project: Path, settings: dict[str, Any], version: str | None) -> dict[str, str]:
    """Browser links to the registered version, its refit run and the pipeline's parent run."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from components.tracking.runs import store_uri

    if not version:
        return {}
    uri = store_uri(settings["tracking"], project)
    base = uri if uri.startswith(("http://", "https://")) else settings["retrain"]["mlflow_ui"]
    base = base.rstrip("/")
    name = settings["tracking"]["model_name"]
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
    log: ReproLog,
    changes: list[str],
    before: str | None,
    after: str | None,
    project: Path,
    links: dict[str, str],
) -> dict[str, Any]:
    """What the run changed, trained and decided, as plain data."""
    summary: dict[str, Any] = {
        "data_version": {"before": before, "after": after, "changed": before != after},
        "params_changed": changes,
        "stages_run": log.ran,
        "stages_skipped": log.skipped,
        "repro_seconds": log.seconds,
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
    lines.append(f"- **dvc repro**: {summary['repro_seconds']:.1f} s")
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
    project_dir: str | None = None,
    wait_s: float | None = None,
) -> dict[str, Any]:
    """Re-run the pipeline on the current source data and promote the new model if it wins.

    Args:
        source: Audio source (``ingest.source``): ``demo``, ``zenodo``, or a folder or .zip.
        models: Models to train (``train.models``), each a params.yaml section.
        protocol: Evaluation protocol that ranks the candidates and gates promotion
            (``actor-kfold``, ``holdout`` or ``random``); the other configured runs stay.
        project_dir: The checkout to run in (default: ``SER_PROJECT_DIR``, else the working folder).
        wait_s: Seconds to wait for another retrain of this checkout to finish (``retrain.wait_s``).

    Left out, each parameter keeps its params.yaml value.
    """
    from prefect.artifacts import create_markdown_artifact

    from components.tracking.runs import raw_data_version

    logger = get_run_logger()
    project = project_root(project_dir)
    params_file = project / PARAMS_FILE
    settings = load_settings(params_file).as_params()  # what follows reads none of the overridden keys
    if wait_s is None:
        wait_s = settings["retrain"]["wait_s"]
    with hold_lock(project / LOCK_TARGET, f"retraining in {project}", wait_s=wait_s):
        changes = apply_overrides(params_file, source, models, protocol)
        before = raw_data_version(project / "dvc.lock")
        logger.info("dvc repro in %s%s", project, f" ({'; '.join(changes)})" if changes else "")
        log, output = run_repro(project, float(settings["retrain"]["timeout_s"]))
        logger.info("dvc repro done in %.1f s: ran %s", log.seconds, ", ".join(log.ran) or "nothing")
        logger.info("dvc repro output (last lines):\n%s", "\n".join(output.splitlines()[-40:]))
        version = (
            read_metrics(project, "train").get("registry", {}).get("version") if "train" in log.ran else None
        )
        links = mlflow_links(project, settings, str(version) if version else None)
        summary = summarize(log, changes, before, raw_data_version(project / "dvc.lock"), project, links)
    text = summary_markdown(summary, settings["evaluate"]["primary_metric"])
    create_markdown_artifact(
        markdown=text, key=ARTIFACT_KEY, description="What this retrain changed and decided"
    )
    logger.info("%s", text)
    return summary


def main() -> None:
    """``python -m flows.retrain``: one retrain now, with params.yaml as it is."""
    run_flow(retrain)  # the flow logs its summary


if __name__ == "__main__":
    exit_on_error(main)
