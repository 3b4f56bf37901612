"""What every speed and cost benchmark shares: its common options and the stamped report it writes.

A benchmark is a script (``python benchmarks/<name>.py``); this folder is on its ``sys.path``, so
it imports ``from common import ...``. Every report starts with the commit and the command that
produced it, as the experiment harness's reports do.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from components.runtime.files import write_text
from components.tracking.runs import git_commit

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"


def default_data() -> Path:
    """The real RAVDESS sample: ``RAVDESS_DIR``, else ``../shared/ravdess``."""
    return Path(os.environ.get("RAVDESS_DIR", ROOT.parent / "shared" / "ravdess"))


def add_common_args(
    parser: argparse.ArgumentParser,
    report: str,
    data: bool = False,
    workers: int | None = None,
    fresh_process: bool = False,
) -> None:
    """Add ``--out`` (default ``reports/<report>.md``), and ``--data`` and ``--workers`` if asked.

    ``fresh_process`` adds ``--n-clips`` and the hidden ``--run CONFIG`` with which the benchmark
    runs one measured configuration in a child process (see :func:`child_command`).
    """
    parser.add_argument("--out", type=Path, default=REPORTS / f"{report}.md", help="the Markdown report")
    if fresh_process:
        parser.add_argument("--run", help=argparse.SUPPRESS)
        parser.add_argument("--n-clips", type=int, default=None, help="use only the first N clips")
    if data:
        parser.add_argument("--data", type=Path, default=default_data(), help="RAVDESS folder (RAVDESS_DIR)")
    if workers is not None:
        parser.add_argument("--workers", type=int, default=workers, help="processes working at once")


def child_command(config: dict) -> list[str]:
    """The command that runs this benchmark on one configuration in a fresh process (``--run``)."""
    return [sys.executable, str(Path(sys.argv[0]).resolve()), "--run", json.dumps(config)]


def run_child(args: argparse.Namespace, run_one: Callable[[dict], dict]) -> bool:
    """In a child started by :func:`child_command`: run its configuration, print the result as JSON."""
    if not getattr(args, "run", None):
        return False
    print(json.dumps(run_one(json.loads(args.run))))
    return True


def command_line() -> str:
    """This process's command as a user would type it from the project root."""
    script = Path(sys.argv[0]).resolve()
    name = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    return shlex.join(["python", str(name), *sys.argv[1:]])


def stamp(command: str | None = None) -> str:
    """The report's first line: the commit and the command that produced it."""
    return f"> Produced at commit {git_commit()[:7]} by: `{command or command_line()}`"


def write_report(path: Path, text: str, command: str | None = None) -> None:
    """Write a report (atomically) with its stamp under the title, and print it."""
    title, _, rest = text.partition("\n")
    stamped = (
        f"{title}\n\n{stamp(command)}\n{rest}" if title.startswith("# ") else f"{stamp(command)}\n\n{text}"
    )
    write_text(Path(path), stamped)
    print(stamped)


def check_data(path: Path) -> Path:
    """The RAVDESS folder, resolved; exit with a message when it is not there."""
    if not Path(path).is_dir():
        raise SystemExit(f"no RAVDESS sample at {path}: pass --data or set RAVDESS_DIR")
    return Path(path).resolve()
