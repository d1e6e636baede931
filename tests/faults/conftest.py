"""Fault scenarios reuse the integration fixtures: real servers, real workers, the Discord stand-in.

Each scenario records what it measured (counts, recovery times, peak memory)
with the `measure` fixture; the figures are printed at the end of the run, so
every CI log carries the numbers docs/reliability.md reports.
"""

from __future__ import annotations

from collections.abc import Callable
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
_MEASURED = pytest.StashKey[list[tuple[str, str, str]]]()

Measure = Callable[[str, object], None]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test here talks to real servers and injects a fault."""
    for item in items:
        if FAULTS_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.faults)


@pytest.fixture
def measure(request: pytest.FixtureRequest) -> Measure:
    """measure(figure, value): keep a measured figure for the end-of-run table (and the JUnit XML)."""

    def record(figure: str, value: object) -> None:
        request.node.user_properties.append((figure, str(value)))
        request.config.stash.setdefault(_MEASURED, []).append((request.node.name, figure, str(value)))

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Print every figure the fault scenarios measured, by test."""
    measured = config.stash.get(_MEASURED, [])
    if not measured:
        return
    terminalreporter.section("fault scenarios: measured")
    current = ""
    for test, figure, value in measured:
        if test != current:
            terminalreporter.write_line(test)
            current = test
        terminalreporter.write_line(f"    {figure}: {value}")
