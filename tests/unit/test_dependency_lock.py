"""constraints.txt, the lock of the Python dependencies: what the image and the tests install.

setup.cfg's ranges stay the library's contract; the lock pins one tested version of
everything inside them (scripts/lock refreshes it). The tests run in the environment
scripts/bootstrap --test made (.ci/run), so checking that environment against the
lock checks that .ci/run installs the lock.
"""

from __future__ import annotations

import configparser
import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
REFRESH = "refresh the lock: scripts/lock, then run the tests"


def locked() -> dict[str, str]:
    """Package (canonical name) -> its locked version."""
    pins: dict[str, str] = {}  # canonical names
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            match = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!-]+)", line)
            assert match, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def contract() -> list[Requirement]:
    """setup.cfg's install_requires and test extras."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = [*config["options"]["install_requires"].splitlines(),
             *config["options.extras_require"]["test"].splitlines()]
    return [Requirement(line) for line in (line.strip() for line in lines) if line and not line.startswith("#")]


def test_the_lock_pins_every_requirement_inside_setup_cfgs_range() -> None:
    pins = locked()
    for requirement in contract():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not locked; {REFRESH}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{requirement.name}=={pins[name]} is outside setup.cfg's {requirement.specifier}; {REFRESH}")
    assert "iot-sensors-bridge" not in pins, "the project itself is installed from the checkout"


def test_the_tests_run_on_exactly_the_locked_versions() -> None:
    installed: dict[str, str] = {canonicalize_name(dist.metadata["Name"]): dist.version
                                 for dist in metadata.distributions()}
    differ = {name: (version, installed.get(name)) for name, version in locked().items()
              if installed.get(name) != version}
    assert not differ, f"locked vs installed: {differ}; run scripts/bootstrap --test (or bash .ci/run)"


def test_ci_and_the_image_install_the_lock() -> None:
    ci = (ROOT / ".ci/run").read_text()
    assert re.search(r"^scripts/bootstrap --test$", ci, re.M)
    bootstrap = (ROOT / "scripts/bootstrap").read_text()
    assert re.search(r'pip install .*-e "\$spec" -c constraints\.txt', bootstrap)
    # A refreshed lock reinstalls: the marker of what was installed covers it.
    assert re.search(r"wanted=.*cat setup\.cfg pyproject\.toml constraints\.txt \| cksum", bootstrap)
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    assert re.search(r"pip install .*-r requirements\.txt -c constraints\.txt", dockerfile)
