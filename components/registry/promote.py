"""The model registry: register candidates, move ``champion`` only for a better model, roll back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from components.runtime.locks import hold_lock
from components.tracking.store import is_missing, store_error

CHAMPION = "champion"
PREVIOUS = "previous"
REGISTRY_WAIT_S = 300.0  # a promotion takes seconds: wait for another run's rather than fail after training


@dataclass
class Decision:
    """Whether a candidate version became champion, and why."""

    version: str
    promoted: bool
    reason: str
    replaced: str | None = None


def store_path(tracking_uri: str) -> Path:
    """The local file a registry lock guards: the SQLite file or store folder, else a workspace file.

    A remote store (an MLflow server) gets a lock in the working folder: it keeps this
    workspace's runs apart, not runs on other machines.
    """
    for prefix in ("sqlite:///", "file://"):
        if tracking_uri.startswith(prefix):
            return Path(tracking_uri.removeprefix(prefix))
    if "://" not in tracking_uri:
        return Path(tracking_uri)
    return Path(".ser-cache") / "registry"


@contextlib.contextmanager
def registry_lock(client: MlflowClient, what: str) -> Iterator[None]:
    """Hold the registry's workspace lock: one run at a time registers a version and moves aliases."""
    with hold_lock(store_path(client.tracking_uri), what, wait_s=REGISTRY_WAIT_S):
        yield


def register(client: MlflowClient, name: str, model_uri: str, run_id: str, tags: dict[str, Any]) -> str:
    """Register ``model_uri`` as a new version of ``name`` (created if needed) and tag it."""
    import mlflow

    with registry_lock(client, f"registering {name}"):
        try:
            client.get_registered_model(name)
        except MlflowException as err:
            if not is_missing(err):  # a store that failed must not look like a model to create
                raise
            client.create_registered_model(
                name, description="RAVDESS speech emotion recognition: raw audio in"
            )
        version = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    return str(version.version)


def champion(client: MlflowClient, name: str) -> Any | None:
    """The version holding the ``champion`` alias, or None (a failed store call is raised, not None)."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as err:
        if is_missing(err):
            return None
        raise


def promote_if_better(
    client: MlflowClient,
    name: str,
    version: str,
    score: float,
    comparable: dict[str, str],
    fresh_scores: dict,
) -> Decision:
    """Move ``champion`` to ``version`` only if it beats the current champion on equal terms.

    The champion's recorded score counts when it was measured on the same protocol, subset,
    metric, number of folds, data version, training corpora and label set (``comparable``).
    Otherwise its model kind's score from this very run (``fresh_scores``: kind → score) is
    used; with neither, the candidate is promoted.
    The replaced champion keeps alias ``previous``. Moving the alias is one registry call, made
    under the registry lock, so two runs never both read the same champion and both move it.
    """
    with registry_lock(client, f"promoting {name} v{version}"):
        return _promote_if_better(client, name, version, score, comparable, fresh_scores)


def _promote_if_better(
    client: MlflowClient, name: str, version: str, score: float, comparable: dict, fresh_scores: dict
) -> Decision:
    current = champion(client, name)
    if current is None:
        return _promote(client, name, version, None, "no champion yet")
    tags = current.tags
    if all(tags.get(key) == value for key, value in comparable.items()):
        best, basis = float(tags["primary_metric_value"]), "its recorded score on the same data and protocol"
    elif tags.get("model_kind") in fresh_scores:
        best, basis = (
            fresh_scores[tags["model_kind"]],
            f"its kind re-evaluated in this run ({tags['model_kind']})",
        )
    else:
        return _promote(
            client, name, version, str(current.version), "champion not comparable on this data/protocol"
        )
    if score > best:
        return _promote(client, name, version, str(current.version), f"{score:.4f} > {best:.4f} ({basis})")
    return Decision(
        version, False, f"{score:.4f} does not beat champion v{current.version}: {best:.4f} ({basis})"
    )


def _promote(client: MlflowClient, name: str, version: str, replaced: str | None, reason: str) -> Decision:
    # ``previous`` first: a run killed between the two calls leaves champion where it was (and
    # ``previous`` on it too), never a new champion with no way back.
    if replaced is not None:
        client.set_registered_model_alias(name, PREVIOUS, replaced)
    client.set_registered_model_alias(name, CHAMPION, version)
    return Decision(version, True, reason, replaced)


def rollback(client: MlflowClient, name: str) -> Decision:
    """Put ``previous`` back as champion (the demoted one becomes ``previous``)."""
    with registry_lock(client, f"rolling back {name}"):
        try:
            previous = client.get_model_version_by_alias(name, PREVIOUS)
        except MlflowException as err:
            from components.errors import SerError

            if not is_missing(err):
                raise store_error(err, client.tracking_uri) from err
            raise SerError(f"{name}: no version has alias '{PREVIOUS}'; nothing to roll back to") from err
        current = champion(client, name)
        # champion first, unlike a promotion: a rollback killed between the two calls has still
        # rolled back (both aliases on the old version) rather than lost the version to go back to
        client.set_registered_model_alias(name, CHAMPION, str(previous.version))
        demoted = str(current.version) if current else None
        if demoted is not None:
            client.set_registered_model_alias(name, PREVIOUS, demoted)
        return Decision(str(previous.version), True, "rollback", demoted)
