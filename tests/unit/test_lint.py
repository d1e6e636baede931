"""Static checks run with the suite, so CI fails on them like on any test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def run(*command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, **(env or {})})


def test_ruff_finds_nothing() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.fail("ruff is not installed: pip install -e '.[test]'")
    result = run(ruff, "check", "bridge", "watchdog", "simulator", "tests", "benchmarks", "mosquitto", "scripts",
                 "deploy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_passes_on_the_package() -> None:
    result = run(sys.executable, "-m", "mypy")  # configured in setup.cfg: strict, the packages
    assert result.returncode == 0, result.stdout + result.stderr


# Two runs: tests/unit imports its fakes as the top-level `fakes` (pytest puts that
# folder on sys.path), and its conftest.py would clash with tests/conftest.py in one.
@pytest.mark.parametrize(("paths", "search_path", "extra"), [
    (("tests", "benchmarks", "scripts"), "tests:benchmarks", ("--explicit-package-bases", "--exclude", "tests/unit/")),
    (("tests/unit",), "tests/unit:tests", ()),
])
def test_mypy_strict_passes_on_the_tests_benchmarks_and_scripts(
    paths: tuple[str, ...], search_path: str, extra: tuple[str, ...],
) -> None:
    result = run(sys.executable, "-m", "mypy", "--config-file", "setup.cfg", *extra, *paths,
                 env={"MYPYPATH": search_path})
    assert result.returncode == 0, result.stdout + result.stderr
