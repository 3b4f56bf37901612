"""requirements.lock, which `make venv` installs from: it pins every dependency and no CUDA wheel."""

from __future__ import annotations

import re
import tomllib

from tests.conftest import ROOT

PINS = {
    re.sub(r"[-_.]+", "-", name).lower(): version
    for name, version in re.findall(
        r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", (ROOT / "requirements.lock").read_text(), re.M
    )
}


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]).lower()


def test_the_lock_pins_every_dependency_but_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]}
    assert "torch" not in PINS  # installed first by the Makefile, pinned to its CPU build
    missing = sorted(wanted - {"torch"} - set(PINS))
    assert not missing, f"requirements.lock lacks {missing}: run `make lock`"


def test_the_lock_pulls_no_cuda_packages():
    cuda = sorted(name for name in PINS if name.startswith(("nvidia-", "cuda-", "triton")))
    assert not cuda, f"requirements.lock pins CUDA packages {cuda}: resolve against torch's CPU build"
