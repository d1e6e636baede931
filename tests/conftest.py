"""Shared by every test: the fixture plugins (psycopg's tests/fix_*.py pattern), the folder markers and `stack_init`.

This folder has no __init__.py, so pytest's default "prepend" import mode puts
it on sys.path: that is what lets pytest_plugins name the fix_* modules, and
test modules import `from fix_measure import Measure`. The helpers those
fixtures drive (servers, workers, traffic) are the `devstack` package.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from devstack.scripts import load_script

pytest_plugins = ["fix_servers", "fix_replication", "fix_watchdog", "fix_measure", "fix_site"]

TESTS_DIR = Path(__file__).resolve().parent

# Every test in these folders talks to real servers (integration) and, in faults/, injects a fault.
FOLDER_MARKERS: dict[Path, tuple[pytest.MarkDecorator, ...]] = {
    TESTS_DIR / "integration": (pytest.mark.integration,),
    TESTS_DIR / "faults": (pytest.mark.integration, pytest.mark.faults),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test by its folder: tests/integration `integration`, tests/faults `integration` and `faults`."""
    for item in items:
        for folder, markers in FOLDER_MARKERS.items():
            if folder in item.path.parents:
                for marker in markers:
                    item.add_marker(marker)


# Unit tests (compose, init) and integration tests (migration, broker health
# check) all load the init program; once per test file is enough (it keeps no state).
@pytest.fixture(scope="module")
def stack_init() -> ModuleType:
    """deploy/compose/stack_init.py, the compose stack's init program (a script, not a package), as a module."""
    return load_script("deploy/compose/stack_init.py")
