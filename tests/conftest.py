"""Shared by every test: the fixture plugins (psycopg's tests/fix_*.py pattern) and the `stack_init` fixture.

This folder has no __init__.py, so pytest's default "prepend" import mode puts
it on sys.path: that is what lets pytest_plugins name the fix_* modules, and
test modules import `from fix_measure import Measure`. The helpers those
fixtures drive (servers, workers, traffic) are the `devstack` package.
"""

from __future__ import annotations

from types import ModuleType

import pytest

from devstack.scripts import load_script

pytest_plugins = ["fix_servers", "fix_replication", "fix_watchdog", "fix_measure", "fix_site"]


# Unit tests (compose, init) and integration tests (migration, broker health
# check) all load the init program; once per test file is enough (it keeps no state).
@pytest.fixture(scope="module")
def stack_init() -> ModuleType:
    """deploy/compose/stack_init.py, the compose stack's init program (a script, not a package), as a module."""
    return load_script("deploy/compose/stack_init.py")
