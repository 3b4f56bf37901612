"""Files every entry point writes atomically, and the one way a command reports a user's mistake."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from components.errors import SerError


def project_root(project_dir: str | Path | None = None) -> Path:
    """The checkout a deployed flow works in: ``project_dir``, else ``SER_PROJECT_DIR``, else the cwd.

    Raises:
        SerError: The folder is not a checkout of this project.
    """
    project = Path(project_dir or os.environ.get("SER_PROJECT_DIR") or ".").resolve()
    if not (project / "dvc.yaml").is_file() or not (project / "params.yaml").is_file():
        raise SerError(
            f"{project}: not a checkout of this project (no dvc.yaml/params.yaml); set SER_PROJECT_DIR"
        )
    return project


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically: a reader sees the old file or the new one, never a partial one."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def exit_on_error(main: Callable[[], Any]) -> None:
    """Run a command's body; print a ``SerError`` as one line on stderr and exit 1."""
    import sys

    try:
        main()
    except SerError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
