"""Benchmark: the featurize stage on local processes vs a Dask LocalCluster, on the real RAVDESS sample.

Each run is a fresh process calling ``flows.featurize.extract_features`` (what the stage
runs) into an empty folder, with ``orchestration.task_runner`` set to ``process`` or
``dask``; the other settings (feature sets included) come from params.yaml. Runs alternate
between the runners, in rounds, so a burst of load from other jobs hits both. Checks that
both runners wrote byte-identical tables. Writes ``reports/dask.md`` and prints it.

Usage: ``RAVDESS_DIR=../shared/ravdess python benchmarks/dask_featurize.py [--repeat 2] [--n-clips N]``
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, add_common_args, check_data, child_command, run_child, write_report

RUNNERS = ("process", "dask")


def run_one(config: dict) -> dict:
    """One run, in this (fresh) process: featurize the clip table into an empty folder."""
    started = time.perf_counter()
    import pandas as pd
    import yaml

    from flows.featurize import extract_features

    settings = yaml.safe_load((ROOT / "params.yaml").read_text())
    settings["orchestration"]["task_runner"] = config["runner"]
    clips = pd.read_parquet(config["clips"])
    called = time.perf_counter()
    from components.settings import Settings

    metrics = extract_features(clips, Path(config["out"]), Settings.model_validate(copy.deepcopy(settings)))
    done = time.perf_counter()
    assert not metrics["n_failed"], metrics
    digests = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(config["out"]).glob("*.parquet"))
    }
    return {
        "wall_s": done - called,  # cluster or pool start-up included
        "featurize_s": metrics["seconds"],  # the extraction itself (workers already up on Dask)
        "process_s": done - started,
        "digests": digests,
        "sets": settings["featurize"]["feature_sets"],
        "workers": settings["featurize"]["n_jobs"]
        if config["runner"] == "process"
        else settings["orchestration"]["dask_workers"],
    }


def measure(config: dict) -> dict:
    """Run one configuration in a subprocess; its wall times, CPU time of its tree, the load."""
    load = os.getloadavg()
    proc = subprocess.Popen(child_command(config), cwd=ROOT, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # includes reaped workers (the LocalCluster's too)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"run {config['runner']} failed")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(cpu_s=usage.ru_utime + usage.ru_stime, load=load[0], load_after=os.getloadavg()[0])
    return result


def clip_table(data_dir: Path, path: Path, n_clips: int | None) -> int:
    """The validate stage's clip table for the sample (labels, location, content hash)."""
    import yaml

    from components.data.discover import discover
    from components.data.metadata import build_metadata

    settings = yaml.safe_load((ROOT / "params.yaml").read_text())
    clips, _ = build_metadata(discover(data_dir), silence_dbfs=settings["validate"]["silence_dbfs"])
    clips = clips.sort_values("clip_id").iloc[:n_clips]
    clips.to_parquet(path)
    return len(clips)


def render(runs: dict[str, list[dict]], n_clips: int, data_dir: Path, identical: dict[str, bool]) -> str:
    """The markdown report: one row per runner (fastest run), every run's time, the load."""
    first = runs["process"][0]
    lines = [
        "# featurize on local processes vs Dask",
        "",
        f"`python benchmarks/dask_featurize.py` on {n_clips} real RAVDESS clips ({data_dir.name}),",
        f"feature sets {', '.join(first['sets'])} (params.yaml), {os.cpu_count()} CPUs,",
        f"Python {platform.python_version()}. Each run is a fresh process; runners alternate in rounds.",
        "`wall s` is `extract_features` as the stage calls it: pool or LocalCluster start-up included;",
        "`featurize s` is the extraction alone (on Dask the workers are already up and warmed);",
        "`process s` adds interpreter start and imports; `CPU s` is user+system of the process tree.",
        "`load` is the 1-minute load average before / after the run (other jobs share the machine).",
        "",
        "| runner | workers | clips | wall s | clips/s | featurize s | process s | CPU s | load "
        "| runs wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for runner in RUNNERS:
        best = min(runs[runner], key=lambda r: r["wall_s"])
        label = "process (ProcessPoolExecutor)" if runner == "process" else "dask (LocalCluster)"
        every = " / ".join(f"{r['wall_s']:.1f}" for r in runs[runner])
        lines.append(
            f"| {label} | {best['workers']} | {n_clips} | {best['wall_s']:.2f} | "
            f"{n_clips / best['wall_s']:.0f} | "
            f"{best['featurize_s']:.2f} | {best['process_s']:.2f} | {best['cpu_s']:.1f} | "
            f"{best['load']:.1f} / {best['load_after']:.1f} | {every} |"
        )
    ratio = min(r["wall_s"] for r in runs["dask"]) / min(r["wall_s"] for r in runs["process"])
    lines += [
        "",
        f"- Dask / process wall time (fastest runs): {ratio:.2f}x",
        "- tables byte-identical across runners and runs: "
        + ", ".join(f"{name} {'yes' if same else 'NO'}" for name, same in identical.items()),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="rounds; the table shows the fastest run")
    add_common_args(parser, "dask", data=True, fresh_process=True)
    args = parser.parse_args()
    if run_child(args, run_one):
        return
    data_dir = check_data(args.data)
    runs: dict[str, list[dict]] = {runner: [] for runner in RUNNERS}
    with tempfile.TemporaryDirectory(prefix="dask-bench-") as tmp:
        clips = Path(tmp) / "clips.parquet"
        n_clips = clip_table(data_dir, clips, args.n_clips)
        for attempt in range(args.repeat):
            for runner in RUNNERS:
                out = Path(tmp) / f"{runner}-{attempt}"
                result = measure({"runner": runner, "clips": str(clips), "out": str(out)})
                print(f"{runner} round {attempt + 1}: {result['wall_s']:.1f} s", file=sys.stderr)
                runs[runner].append(result)
                print(json.dumps({runner: result["digests"]}), file=sys.stderr)
    every = [r["digests"] for rs in runs.values() for r in rs]
    identical = {name: len({d.get(name) for d in every}) == 1 for name in every[0]}
    report = render(runs, n_clips, data_dir, identical)
    write_report(args.out, report)


if __name__ == "__main__":
    main()
