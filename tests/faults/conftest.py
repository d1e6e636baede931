"""Fault scenarios reuse the integration fixtures: real servers, real workers, the Discord stand-in."""

from __future__ import annotations

from pathlib import Path

import pytest
from integration.conftest import *  # noqa: F403 - the fixtures
from integration.conftest import (  # private names are not star-imported
    _empty_tables,  # noqa: F401
    _mosquitto_backend,  # noqa: F401
    _postgres_backend,  # noqa: F401
    pytest_runtest_makereport,  # noqa: F401 - lets start_worker tell whether a test failed
)
from integration.test_watchdog import discord, start_watchdog  # noqa: F401

FAULTS_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test here talks to real servers and injects a fault."""
    for item in items:
        if FAULTS_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.faults)
