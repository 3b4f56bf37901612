"""Benchmark of the featurize stage on the real RAVDESS sample: throughput, scaling, memory.

Every configuration runs in a fresh subprocess, so interpreter start-up, imports and worker
start-up are paid as in a real run; the parent samples the subprocess tree's memory (PSS,
shared pages counted once) and reads its peak RSS from ``getrusage(RUSAGE_CHILDREN)``.
Writes ``reports/featurize.md`` and prints it.

Usage: ``RAVDESS_DIR=../shared/ravdess python benchmarks/featurize.py [--n-clips N]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, add_common_args, check_data, child_command, run_child, write_report

ALL_SETS = ("handmade", "egemaps", "logmel", "waveform")
TIMED = [  # (sets, n_jobs): each set alone, the two fast spectral sets together, all four
    *[((name,), jobs) for name in ALL_SETS for jobs in (1, 2)],
    *[(("handmade", "logmel"), jobs) for jobs in (1, 2)],
    *[(ALL_SETS, jobs) for jobs in (1, 2)],
]
MEMORY_SIZES = (300, 600)  # plus the full corpus from the timed runs: memory must stay flat


def clip_table(data_dir: Path, path: Path) -> int:
    """Discover the clips, hash their bytes, save the table the workers read; returns its size."""
    import pandas as pd

    from components.data.discover import discover, read_bytes

    rows = []
    for found in discover(data_dir).files:
        digest = hashlib.blake2b(read_bytes(found.location), digest_size=16).hexdigest()
        rows.append({**found.labels.as_dict(), "location": found.location, "content_hash": digest})
    pd.DataFrame(rows).to_parquet(path)
    return len(rows)


def run_one(config: dict) -> dict:
    """One configuration, in this (fresh) process: featurize into an empty folder."""
    started = time.perf_counter()
    import pandas as pd
    import yaml

    from components.features.featurize import featurize
    from components.features.sets import extract_params

    settings = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = extract_params(settings["preprocess"], settings["featurize"])
    clips = pd.read_parquet(config["clips"]).iloc[: config["n_clips"]]
    summary = featurize(clips, config["out"], config["sets"], params, n_jobs=config["n_jobs"], progress=False)
    if config.get("rerun"):  # the incremental case: nothing changed, everything is reused
        summary = featurize(
            clips, config["out"], config["sets"], params, n_jobs=config["n_jobs"], progress=False
        )
    assert not summary.failures, summary.failures[:3]
    return {"featurize_s": summary.seconds, "process_s": time.perf_counter() - started}


def measure(config: dict, sample_memory: bool) -> dict:
    """Run a configuration in a subprocess; wall and CPU time, peak memory of its process tree."""
    import psutil

    load = os.getloadavg()[0]
    proc = subprocess.Popen(child_command(config), cwd=ROOT, stdout=subprocess.PIPE, text=True)
    peak_pss, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak_pss
        root = psutil.Process(proc.pid)
        while not done.wait(0.25):
            try:
                tree = [root, *root.children(recursive=True)]
                peak_pss = max(peak_pss, sum(p.memory_full_info().pss for p in tree))
            except psutil.Error:
                pass

    sampler = threading.Thread(target=sample, daemon=True)
    if sample_memory:
        sampler.start()
    out = proc.stdout.read()
    # wait4 gives this child's usage including its reaped workers: CPU summed, RSS the largest process
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    if proc.returncode:
        raise SystemExit(f"configuration {config} failed with exit code {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["cpu_s"] = usage.ru_utime + usage.ru_stime
    result["max_rss_mb"] = usage.ru_maxrss / 1024  # KiB on Linux
    result["peak_pss_mb"] = peak_pss / 2**20 if sample_memory else None
    result["load"] = load
    return result


def summarize(step: dict, results: list[dict]) -> dict:
    """One table row: the fastest run of a configuration, the largest memory of any run."""
    best = min(results, key=lambda r: r["featurize_s"])
    label = "all four" if step["sets"] == ALL_SETS else "+".join(step["sets"])
    label += " (rerun, all reused)" if step.get("rerun") else ""
    pss = [r["peak_pss_mb"] for r in results if r["peak_pss_mb"] is not None]
    return {
        **best,
        "label": label,
        "n_jobs": step["n_jobs"],
        "n_clips": step["n_clips"],
        "all_s": [r["featurize_s"] for r in results],
        "max_rss_mb": max(r["max_rss_mb"] for r in results),
        "peak_pss_mb": max(pss) if pss else None,
    }


def render(rows: list[dict], n_total: int, data_dir: Path, repeat: int) -> str:
    """The markdown report: configuration table, then the goals."""
    columns = ["sets", "n_jobs", "clips", "featurize s", "clips/s", "process s", "CPU s"]
    columns += ["max RSS MB", "peak PSS MB", "load", "runs s"]
    lines = [
        "# featurize benchmark",
        "",
        f"`python benchmarks/featurize.py` on {n_total} real RAVDESS clips ({data_dir.name}: 16 kHz,",
        f"2.39 s each), {os.cpu_count()} CPUs, Python {platform.python_version()}, params.yaml settings.",
        "Each row is a fresh process: `featurize s` is the call itself (worker start-up included),",
        "`process s` adds interpreter start and imports. `CPU s` is user+system time of the whole process",
        "tree; `load` the 1-minute load average when the run started (other jobs on the machine make wall",
        "times noisy, CPU times less so). Peak PSS sums the tree's proportional memory (sampled every",
        "0.25 s, shared pages counted once); max RSS is the largest single process.",
        f"Each configuration ran {repeat} time(s), in rounds; the row shows the fastest run (timings)",
        "and the largest memory of any run; `runs s` lists every run's featurize time.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for r in rows:
        pss = f"{r['peak_pss_mb']:.0f}" if r["peak_pss_mb"] is not None else ""
        runs = " / ".join(f"{s:.1f}" for s in r["all_s"])
        lines.append(
            f"| {r['label']} | {r['n_jobs']} | {r['n_clips']} | {r['featurize_s']:.2f} | "
            f"{r['n_clips'] / r['featurize_s']:.0f} | {r['process_s']:.2f} | {r['cpu_s']:.1f} | "
            f"{r['max_rss_mb']:.0f} | {pss} | {r['load']:.1f} | {runs} |"
        )
    lines += ["", "## Goals", "", *goals(rows, n_total)]
    return "\n".join(lines) + "\n"


def goals(rows: list[dict], n_total: int) -> list[str]:
    def find(label: str, jobs: int, n: int = n_total) -> dict | None:
        return next(
            (r for r in rows if r["label"] == label and r["n_jobs"] == jobs and r["n_clips"] == n), None
        )

    def rate(row: dict | None) -> float:
        return row["n_clips"] / row["featurize_s"] if row else float("nan")

    fast, all_two = find("handmade+logmel", 2), find("all four", 2)
    all_s = all_two["featurize_s"] if all_two else float("nan")
    speedup = rate(find("egemaps", 2)) / rate(find("egemaps", 1))
    peak = max((r["peak_pss_mb"] or r["max_rss_mb"]) for r in rows)
    checks = [
        (f"handmade + logmel on 2 cores ≥ 100 clips/s: {rate(fast):.0f} clips/s", rate(fast) >= 100),
        (f"eGeMAPS speed-up from 1 to 2 cores ≥ 1.8x: {speedup:.2f}x", speedup >= 1.8),
        (f"all four sets, {n_total} clips, under 30 s: {all_s:.1f} s", all_s < 30),
        (f"peak memory well under 2 GiB: {peak:.0f} MB", peak < 1024),
    ]
    return [f"- {'PASS' if ok else 'MISS'}: {text}" for text, ok in checks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="run the whole plan N times; keep the fastest")
    add_common_args(parser, "featurize", data=True, fresh_process=True)
    args = parser.parse_args()
    if run_child(args, run_one):
        return
    data_dir = check_data(args.data)
    with tempfile.TemporaryDirectory(prefix="featurize-bench-") as tmp:
        clips = Path(tmp) / "clips.parquet"
        n_total = min(clip_table(data_dir, clips), args.n_clips or sys.maxsize)
        plan = [{"sets": sets_, "n_jobs": jobs, "n_clips": n_total} for sets_, jobs in TIMED]
        plan += [{"sets": ALL_SETS, "n_jobs": 2, "n_clips": n} for n in MEMORY_SIZES if n < n_total]
        plan.append({"sets": ALL_SETS, "n_jobs": 2, "n_clips": n_total, "rerun": True})
        runs: list[list[dict]] = [[] for _ in plan]
        for attempt in range(args.repeat):  # whole plan per round: a burst of load hits one round only
            for index, step in enumerate(plan):
                out = f"{tmp}/out{attempt}-{index}"
                config = {**step, "sets": list(step["sets"]), "clips": str(clips), "out": out}
                runs[index].append(measure(config, sample_memory=step["sets"] == ALL_SETS))
                print(f"{index} {step['sets']} n_jobs={step['n_jobs']}: {runs[index][-1]}", file=sys.stderr)
        rows = [summarize(step, results) for step, results in zip(plan, runs, strict=True)]
    report = render(rows, n_total, data_dir, args.repeat)
    write_report(args.out, report)


if __name__ == "__main__":
    main()
