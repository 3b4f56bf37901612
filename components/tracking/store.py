"""Reaching the MLflow store: a short HTTP budget, the URI checked first, failures told in one line.

MLflow's own defaults retry a tracking server that does not answer for about four minutes
(7 retries, exponential backoff, 120 s per request). A command a person waits on gets a budget
of seconds instead (``tracking.http_*`` in params.yaml), and a store it cannot reach or a URI it
cannot parse is one line naming the URI, not "no registered model" or a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from urllib.parse import urlsplit

from mlflow.exceptions import MlflowException

from components.errors import SerError
from components.settings import Tracking

# MLflow reads these at each request; a variable already set in the environment wins
HTTP_ENV = {
    "http_timeout_s": "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "http_max_retries": "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "http_backoff_factor": "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
}
MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")  # no such model; no such alias


def set_http_budget(http_timeout_s: int, http_max_retries: int, http_backoff_factor: int) -> None:
    """Bound how long MLflow waits for a tracking server, unless the environment already says.

    Args:
        http_timeout_s: Seconds to wait for a connection, and for each answer.
        http_max_retries: Retries of a failed request (0: one try).
        http_backoff_factor: Backoff between retries: 0, 2×, 4×… this many seconds (plus up to 1 s).
    """
    values = {
        "http_timeout_s": http_timeout_s,
        "http_max_retries": http_max_retries,
        "http_backoff_factor": http_backoff_factor,
    }
    for key, name in HTTP_ENV.items():
        os.environ.setdefault(name, str(values[key]))


def check_uri(uri: str, source: str) -> None:
    """Refuse a tracking URI MLflow would misread (a ``sqlite:/`` typo, a server with no host).

    Args:
        uri: The tracking URI.
        source: Where it was set (``MLFLOW_TRACKING_URI`` or the params key), named in the message.

    Raises:
        SerError: The URI is malformed; the message names ``source`` and the expected form.
    """
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    if scheme.startswith("sqlite") and not uri.startswith(f"{scheme}:///"):
        raise SerError(
            f"{source}={uri}: not a SQLite URI; write sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    if scheme in ("http", "https"):
        parts = urlsplit(uri)
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise SerError(f"{source}={uri}: the port is not a number; write {scheme}://host:port") from None
        if not parts.hostname:
            raise SerError(f"{source}={uri}: no host; write {scheme}://host:port")


def reach(uri: str, source: str) -> None:
    """Read one experiment from the store, so a store that cannot be read fails here, in one line.

    Raises:
        SerError: The server does not answer, or the store cannot be opened (see :func:`store_error`).
    """
    import sqlalchemy.exc
    from mlflow import MlflowClient

    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except (MlflowException, ImportError, OSError, ValueError, sqlalchemy.exc.SQLAlchemyError) as err:
        raise store_error(err, uri, source) from err


def check_server(tracking: Tracking, uri: str) -> None:
    """Before a stage's work: a tracking URI it cannot use, or a server that does not answer, fails
    now and in seconds (``tracking.http_*``), not after the training it would have logged.

    A SQLite store is not opened here: the stage creates it on first use.
    """
    source = (
        "MLFLOW_TRACKING_URI"
        if os.environ.get("MLFLOW_TRACKING_URI")
        else "params.yaml tracking.tracking_uri"
    )
    set_http_budget(tracking.http_timeout_s, tracking.http_max_retries, tracking.http_backoff_factor)
    check_uri(uri, source)
    if uri.startswith(("http://", "https://")):
        reach(uri, source)


def store_error(err: BaseException, uri: str, source: str = "MLFLOW_TRACKING_URI") -> SerError:
    """One line for a failed store call: the server at ``uri`` does not answer, or the store is unusable."""
    reason = unreachable(err)
    if reason is not None:
        return SerError(
            f"{uri}: the MLflow tracking server does not answer ({reason}); "
            "start it, or set MLFLOW_TRACKING_URI to one that runs"
        )
    return SerError(f"{source}={uri}: not a usable MLflow store ({first_line(err)})")


def unreachable(err: BaseException) -> str | None:
    """Why a tracking server was not reached, when that is what ``err`` says; else None."""
    import requests
    from urllib3.exceptions import (
        ConnectTimeoutError,
        MaxRetryError,
        NameResolutionError,
        NewConnectionError,
        ReadTimeoutError,
    )

    for exc in _chain(err):
        if not isinstance(exc, requests.ConnectionError | requests.Timeout):
            continue
        reason = exc.args[0].reason if exc.args and isinstance(exc.args[0], MaxRetryError) else exc
        tries = 1 + int(os.environ.get(HTTP_ENV["http_max_retries"], "7"))
        timeout = os.environ.get(HTTP_ENV["http_timeout_s"], "120")
        if isinstance(reason, NameResolutionError):
            return "unknown host"
        if isinstance(reason, NewConnectionError):  # before its base class, a connect timeout
            return f"connection refused, {tries} tries" if "refused" in str(reason) else first_line(reason)
        if isinstance(reason, ConnectTimeoutError) or isinstance(exc, requests.ConnectTimeout):
            return f"no connection within {timeout} s, {tries} tries"
        if isinstance(reason, ReadTimeoutError) or isinstance(exc, requests.ReadTimeout):
            return f"no answer within {timeout} s, {tries} tries"
        return first_line(reason)
    return None


def is_missing(err: MlflowException) -> bool:
    """Whether ``err`` says the registered model or alias does not exist (not that the store failed)."""
    return err.error_code in MISSING


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type's name."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
