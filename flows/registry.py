"""The model registry: register candidates, move ``champion`` only for a better model, roll back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

CHAMPION = "champion"
PREVIOUS = "previous"


@dataclass
class Decision:
    """Whether a candidate version became champion, and why."""

    version: str
    promoted: bool
    reason: str
    replaced: str | None = None


def register(client: MlflowClient, name: str, model_uri: str, run_id: str, tags: dict[str, Any]) -> str:
    """Register ``model_uri`` as a new version of ``name`` (created if needed) and tag it."""
    import mlflow

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="RAVDESS speech emotion recognition: raw audio in")
    version = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    return str(version.version)


def champion(client: MlflowClient, name: str) -> Any | None:
    """The version holding the ``champion`` alias, or None."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


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
    metric and data version (``comparable``). Otherwise its model kind's score from this very
    run (``fresh_scores``: kind → score) is used; with neither, the candidate is promoted.
    The replaced champion keeps alias ``previous``. Moving the alias is one registry call.
    """
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
    client.set_registered_model_alias(name, CHAMPION, version)
    if replaced is not None:
        client.set_registered_model_alias(name, PREVIOUS, replaced)
    return Decision(version, True, reason, replaced)


def rollback(client: MlflowClient, name: str) -> Decision:
    """Put ``previous`` back as champion (the demoted one becomes ``previous``)."""
    try:
        previous = client.get_model_version_by_alias(name, PREVIOUS)
    except MlflowException as err:
        from components.errors import SerError

        raise SerError(f"{name}: no version has alias '{PREVIOUS}'; nothing to roll back to") from err
    current = champion(client, name)
    return _promote(
        client, name, str(previous.version), str(current.version) if current else None, "rollback"
    )
