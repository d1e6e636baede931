"""Static checks run with the suite, so CI fails on them like on any test: ruff and mypy on every Python file,
and unit test files named after their module (the README's layout table).
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# Two runs beside setup.cfg's packages: tests/unit imports its fakes as the top-level
# `fakes` (pytest puts that folder on sys.path), and its conftest.py would clash with
# tests/conftest.py in one. The scripts (deploy/compose, scripts, benchmarks) are not
# packages, hence the explicit package bases.
MYPY_RUNS = [
    (("tests", "benchmarks", "scripts", "deploy"), "tests:benchmarks",
     ("--explicit-package-bases", "--exclude", "tests/unit/")),
    (("tests/unit",), "tests/unit:tests", ()),
]


def run(*command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, **(env or {})})


def python_files() -> set[str]:
    """Every .py file of the tree (relative paths), outside hidden folders such as .git and .venv."""
    found: set[str] = set()
    for folder, subfolders, files in os.walk(REPO_ROOT):
        subfolders[:] = [name for name in subfolders if not name.startswith(".") and name != "__pycache__"]
        found.update(str((Path(folder) / name).relative_to(REPO_ROOT)) for name in files if name.endswith(".py"))
    return found


def ruff() -> str:
    path = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(path).exists():
        pytest.fail("ruff is not installed: pip install -e '.[test]'")
    return path


def test_ruff_checks_every_python_file() -> None:
    result = run(ruff(), "check", "--show-files", ".")

    checked = {str(Path(line).relative_to(REPO_ROOT)) for line in result.stdout.splitlines() if line.endswith(".py")}
    assert result.returncode == 0, result.stderr
    assert python_files() - checked == set()


def test_ruff_finds_nothing() -> None:
    result = run(ruff(), "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_checks_every_python_folder() -> None:
    """setup.cfg's packages and the runs below together name every top-level folder that holds Python."""
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    packages = {name.strip() for name in config["mypy"]["packages"].split(",")}
    run_folders = {path.split("/")[0] for paths, _, _ in MYPY_RUNS for path in paths}

    folders = {Path(path).parts[0] for path in python_files()}
    assert folders - packages - run_folders == set()


def test_mypy_strict_passes_on_the_packages() -> None:
    result = run(sys.executable, "-m", "mypy")  # configured in setup.cfg: strict, the packages
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("paths", "search_path", "extra"), MYPY_RUNS)
def test_mypy_strict_passes_on_the_tests_benchmarks_and_scripts(
    paths: tuple[str, ...], search_path: str, extra: tuple[str, ...],
) -> None:
    result = run(sys.executable, "-m", "mypy", "--config-file", "setup.cfg", *extra, *paths,
                 env={"MYPYPATH": search_path})
    assert result.returncode == 0, result.stdout + result.stderr


# The README's layout table: the unit test files that are not named after one module.
NOT_ONE_MODULE = {
    "test_fuzz_validation.py", "test_corpus.py",  # bridge/validation.py besides test_validation.py
    "test_compose.py", "test_compose_partitioned.py", "test_site_config.py", "test_dependency_lock.py",  # not Python
    "test_lint.py", "test_watchdog_package.py",  # the tree; watchdog/__init__.py
    "test_stack_init.py", "test_broker_sync.py", "test_local_stack.py",  # scripts, by their own name
}
BRIDGE_SUBPACKAGES = ("mqtt", "store", "replay", "partition")
OTHER_PACKAGES = ("watchdog", "simulator", "iotcommon", "devstack", "mosquitto")


def modules_named_by(test_file: str) -> set[str]:
    """The modules the README's naming rule lets `test_file` stand for (test_store_sink.py: bridge/store/sink.py)."""
    name = test_file.removeprefix("test_").removesuffix(".py")
    candidates = {f"bridge/{name}.py"}
    if name.endswith("_main"):
        candidates.add(f"{name.removesuffix('_main')}/__main__.py")
    for package in (*BRIDGE_SUBPACKAGES, *OTHER_PACKAGES):
        if name.startswith(f"{package}_"):
            folder = f"bridge/{package}" if package in BRIDGE_SUBPACKAGES else package
            candidates.add(f"{folder}/{name.removeprefix(f'{package}_')}.py")
    return {path for path in candidates if (REPO_ROOT / path).is_file()}


def test_each_unit_test_file_is_named_after_exactly_one_module() -> None:
    files = sorted(path.name for path in (REPO_ROOT / "tests" / "unit").glob("test_*.py"))

    unmatched = {name: sorted(modules_named_by(name)) for name in files
                 if name not in NOT_ONE_MODULE and len(modules_named_by(name)) != 1}
    assert unmatched == {}
    assert set(files) >= NOT_ONE_MODULE, "an exception the README lists is gone: update both"
