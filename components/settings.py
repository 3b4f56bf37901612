"""Reading params.yaml, the one home of the pipeline's settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from components.errors import SerError
from components.paths import PARAMS_FILE


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Load the whole params file.

    Raises:
        SerError: The file is missing or is not a YAML mapping.
    """
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text())
    except FileNotFoundError as err:
        raise SerError(f"{path}: no params file; run from the project root") from err
    except yaml.YAMLError as err:
        raise SerError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(params, dict):
        raise SerError(f"{path}: expected a mapping of stage sections")
    return params


def section(name: str, path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """One stage's section of params.yaml, e.g. ``section("featurize")``."""
    params = load_params(path)
    if name not in params:
        raise SerError(f"{path}: missing section '{name}'")
    return params[name]
