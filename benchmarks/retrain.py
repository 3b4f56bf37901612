"""Scheduled retraining on real servers: cold, one actor added, no change; UI screenshots.

    python benchmarks/retrain.py [--actors 8] [--models rf,svm,logreg,mlp] [--no-screenshots]

Builds a throwaway copy of the project whose ``ingest.source`` is a folder holding a demo corpus
of ``--actors`` actors, starts a real ``prefect server``, serves the deployments as ``make flows``
does, and triggers ``retrain`` through the Prefect API three times: cold, after one more actor's
clips arrive in the folder, and with nothing changed. Writes reports/retrain.md, and with
Chromium present, screenshots of the Prefect UI (deployments, the retrain run's artifact) and of
the MLflow UI (``ravdess-emotion`` with its ``champion``) to reports/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import add_common_args, write_report  # noqa: E402

from tests.conftest import (  # noqa: E402
    free_port,
    make_clone,
    serve_deployments,
    start_mlflow_server,
    start_prefect_server,
    stop,
)
from tests.pipeline.test_deploy import retrain_via_api  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def browser(profile: Path):
    """Headless Debian Chromium (nothing downloaded), or None when it is not installed."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        return None
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument("--window-size=1500,1100")
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(str(CHROMEDRIVER)))


def screenshot(driver, url: str, text: str, path: Path, timeout: float = 60) -> bool:
    """Open ``url``, wait until the page shows ``text``, save a PNG; False if it never does."""
    driver.get(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in driver.find_element("tag name", "body").text:
            time.sleep(2)  # let charts and tables settle
            driver.save_screenshot(str(path))
            return True
        time.sleep(1)
    return False


def take_screenshots(work: Path, port: int) -> list[str]:
    """Prefect UI (deployments, the incremental retrain's artifact) and MLflow registry, to reports/."""
    import httpx

    driver = browser(work / "chromium")
    if driver is None:
        print("no Chromium: screenshots skipped")
        return []
    ui = f"http://127.0.0.1:{port}"
    run_id = json.loads((work / "runs.json").read_text())["one actor added"]
    query = {"artifacts": {"flow_run_id": {"any_": [run_id]}}}
    (artifact,) = httpx.post(f"{ui}/api/artifacts/filter", json=query, timeout=10).json()
    mlflow_port = free_port()
    store = work / "project" / "mlflow"  # what make mlflow-ui serves, on the copy's store
    tracker = start_mlflow_server(store / "mlflow.db", store / "artifacts", mlflow_port, work / "mlflow.log")
    pages = [
        (f"{ui}/deployments", "predict-batch", "prefect_deployments.png"),
        (f"{ui}/artifacts/artifact/{artifact['id']}", "Retrain summary", "prefect_retrain_artifact.png"),
        (f"http://127.0.0.1:{mlflow_port}/#/models/ravdess-emotion", "champion", "mlflow_registry.png"),
    ]
    shots = []
    try:
        for url, text, name in pages:
            if screenshot(driver, url, text, ROOT / "reports" / name):
                shots.append(name)
            else:
                print(f"{url}: '{text}' never appeared; no screenshot")
    finally:
        driver.quit()
        stop(tracker)
    return shots


def summary_line(text: str, label: str) -> str:
    return next(
        (line.split(f"**{label}**: ", 1)[1] for line in text.splitlines() if f"**{label}**" in line), ""
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--actors", type=int, default=8)
    parser.add_argument("--models", default="rf,svm,logreg,mlp")
    parser.add_argument("--no-screenshots", action="store_true")
    parser.add_argument(
        "--screenshots-only", type=Path, metavar="WORK", help="retake screenshots of an earlier run's folder"
    )
    add_common_args(parser, "retrain")
    args = parser.parse_args()
    if args.screenshots_only:
        port = free_port()
        server = start_prefect_server(args.screenshots_only / "prefect-home", port)
        try:
            print("screenshots:", take_screenshots(args.screenshots_only, port))
        finally:
            stop(server)
        return
    from mlflow import MlflowClient

    from components.data.synth import write_corpus

    work = Path(tempfile.mkdtemp(prefix="ser-retrain-bench-"))
    template = work / "template.db"
    MlflowClient(f"sqlite:///{template}").search_experiments()
    source = work / "incoming"
    write_corpus(source, actors=list(range(1, args.actors + 1)), seed=0, n_jobs=2)
    project = make_clone(work / "project", template)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["ingest"]["source"] = str(source)
    params["featurize"]["feature_sets"] = yaml.safe_load((ROOT / "params.yaml").read_text())["featurize"][
        "feature_sets"
    ]
    params["train"]["models"] = args.models.split(",")
    params["evaluate"] = yaml.safe_load((ROOT / "params.yaml").read_text())["evaluate"]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    server = start_prefect_server(work / "prefect-home", port)
    served = serve_deployments(project, api, work / "serve.log")
    rows, texts, runs = [], {}, {}
    try:
        for case, new_actor in (("cold", None), ("one actor added", args.actors + 1), ("no change", None)):
            if new_actor:
                write_corpus(source, actors=[new_actor], seed=0, n_jobs=2)
            started = time.perf_counter()
            run, text = retrain_via_api(api, timeout_s=3600)
            wall = time.perf_counter() - started
            load = os.getloadavg()[1]  # 5-minute load average: other work on the machine slows runs
            if not run.state.is_completed():
                raise SystemExit(f"{case}: retrain ended {run.state.type.value}: {run.state.message}")
            texts[case], runs[case] = text, run
            rows.append(
                {
                    "case": case,
                    "wall s": f"{wall:.1f}",
                    "load": f"{load:.1f}",
                    "dvc repro s": summary_line(text, "dvc repro").removesuffix(" s"),
                    "stages re-run": summary_line(text, "Stages re-run"),
                    "featurize": summary_line(text, "Featurize") or "(skipped)",
                    "registry": "v"
                    + text.split("registered as version ", 1)[1].split(":")[0]
                    + (" promoted" if "promoted to" in text else " not promoted")
                    if "registered as version" in text
                    else "nothing retrained",
                }
            )
            print(rows[-1], flush=True)

        (work / "runs.json").write_text(json.dumps({case: str(run.id) for case, run in runs.items()}))
        shots = [] if args.no_screenshots else take_screenshots(work, port)
    finally:
        stop(served)
        stop(server)

    from components.evaluation.metrics import format_table

    report = [
        "# Scheduled retraining on real servers",
        "",
        f"`python benchmarks/retrain.py --actors {args.actors} --models {args.models}` on {platform.node()}: "
        f"{platform.machine()}, Python {platform.python_version()}, 2 CPUs shared with other work.",
        "",
        f"A copy of the project whose `ingest.source` is a folder holding a {args.actors}-actor demo corpus "
        f"({args.actors * 104} clips, 48 kHz); a real `prefect server`, the deployments served by "
        "`python -m flows.deploy` (`make flows`), and `retrain` triggered through the Prefect API "
        "(`run_deployment`). Models: "
        f"{args.models}; `evaluate.runs` as in params.yaml; all four feature sets.",
        "",
        format_table(rows, list(rows[0])),
        "",
        "*wall s*: from the API call to the run's completion (the served process starts each run in a "
        "subprocess). The no-change run still starts DVC and the `ingest` check. *load*: the machine's "
        "5-minute load average when the run ended (2 cores: above 2, other work was slowing it down). "
        "`train` is not incremental: every model is refitted on all clips; featurize is.",
        "",
        "## The incremental run's artifact",
        "",
        texts["one actor added"].replace("# Retrain summary", "### Retrain summary"),
    ]
    if shots:
        report += ["", "## Screenshots", ""] + [f"![{name}]({name})" for name in shots]
    write_report(args.out, "\n".join(report) + "\n")
    print(f"wrote {args.out} ({work})")


if __name__ == "__main__":
    main()
