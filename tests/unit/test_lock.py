"""The lock files agree with pyproject.toml: every declared dependency pinned, inside its range, with hashes.

`make lock` writes them; this catches a range changed in pyproject.toml without a new lock,
and a runtime pin that differs from the one the tests ran on.
"""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)")


def pins(name: str) -> dict[str, str]:
    """{package: version} of a lock file; asserts every pin carries at least one sha256 hash."""
    text = (REPO_ROOT / name).read_text()
    found: dict[str, str] = {}
    for block in re.split(r"\n(?=\S)", text):
        match = PIN.match(block)
        if match:
            assert "--hash=sha256:" in block, f"{name}: {match.group(1)} has no hash"
            found[canonicalize_name(match.group(1))] = match.group(2)
    return found


def check(requirements: list[str], locked: dict[str, str], lock: str) -> None:
    for text in requirements:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{lock} does not pin {name}: run `make lock`"
        assert requirement.specifier.contains(locked[name], prereleases=True), \
            f"{lock} pins {name}=={locked[name]}, outside {requirement.specifier} in pyproject.toml: run `make lock`"


def test_runtime_lock_pins_every_dependency_within_its_range() -> None:
    check(PYPROJECT["dependencies"], pins("requirements.lock"), "requirements.lock")


def test_dev_lock_pins_runtime_test_and_lint_tools_and_agrees_with_the_runtime_lock() -> None:
    dev = pins("requirements-dev.lock")
    extras = PYPROJECT["optional-dependencies"]
    check(PYPROJECT["dependencies"] + extras["test"] + extras["dev"], dev, "requirements-dev.lock")
    runtime = pins("requirements.lock")
    assert {name: dev.get(name) for name in runtime} == runtime
