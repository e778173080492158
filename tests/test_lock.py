"""The lock files hold versions that pyproject.toml allows, and torch as the Makefile pins it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

REPO = Path(__file__).resolve().parents[1]


def locked(path: Path) -> dict[str, str]:
    """{normalised name: version} of a pip-compile output file."""
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", path.read_text(), flags=re.MULTILINE)
    return {normalised(name): version for name, version in pins}


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize(("lock", "extras"), [("requirements.lock", ()), ("requirements-dev.lock", ("dev",))])
def test_lock_satisfies_pyproject(lock, extras):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [
        *project["dependencies"],
        *(d for extra in extras for d in project["optional-dependencies"][extra]),
    ]
    pins = locked(REPO / lock)
    for requirement in map(Requirement, wanted):
        name = normalised(requirement.name)
        assert name in pins, f"{name} is missing from {lock}: run make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{lock} pins {name}=={pins[name]} outside {requirement}: run make lock"
        )


def test_locks_agree_and_pin_torch_as_the_makefile():
    runtime, dev = locked(REPO / "requirements.lock"), locked(REPO / "requirements-dev.lock")
    assert {name: dev[name] for name in runtime} == runtime
    spec = re.search(r"^TORCH_SPEC \?= (.+)$", (REPO / "Makefile").read_text(), flags=re.MULTILINE).group(1)
    for pin in spec.split():
        name, version = pin.split("==")
        assert runtime[name] == version
