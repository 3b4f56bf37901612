"""What every flow shares: clean failures and atomic writes of small outputs."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prefect.states import Failed

from components.errors import SerError


def fail_cleanly(body: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a ``SerError`` raised in a flow body into a Failed state carrying its message.

    A user's mistake (bad path, offline, too many rejected files) then ends the flow run
    with a one-line message in the Prefect UI and on the terminal, not a stack trace.
    """

    @functools.wraps(body)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return body(*args, **kwargs)
        except SerError as err:
            return Failed(message=str(err))

    return wrapper


@contextlib.contextmanager
def prefect_api() -> Iterator[None]:
    """Use the configured Prefect API, or start one temporary server for this process and its children.

    Prefect starts a temporary server by itself when none is configured, but worker processes
    of a process-based task runner would each start their own; exporting the URL shares one.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start(timeout=120)
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            yield
    finally:
        from prefect.logging.handlers import APILogHandler

        APILogHandler().flush()  # send the last log lines before the server goes away
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


def run_flow(flow: Any, **kwargs: Any) -> Any:
    """Run a flow and return its result, raising ``SerError`` with its message if it failed."""
    with prefect_api():
        state = flow(return_state=True, **kwargs)
    if not state.is_completed():
        raise SerError(state.message or f"{flow.name} ended in state {state.type.value}")
    return state.result()


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
