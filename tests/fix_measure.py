"""Fixture: `measure`, the figures a fault scenario or soak measured, printed at the end of the run (a plugin).

Every CI log thus carries the numbers docs/reliability.md reports.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

_MEASURED = pytest.StashKey[list[tuple[str, str, str]]]()

Measure = Callable[[str, object], None]


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
