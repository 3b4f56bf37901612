"""Prefect flows, one module per DVC stage and per deployment; what every flow shares is here.

Only flows live in this package: the library they wire together is ``components/``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
from collections.abc import Callable, Iterator
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

    # Prefect builds the flow's parameter model from these annotations; resolved here, in the
    # flow's own module, because a string annotation would be looked up in this module instead
    wrapper.__signature__ = inspect.signature(body, eval_str=True)  # type: ignore[attr-defined]
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
