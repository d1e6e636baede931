"""Fixture: `measure`, the figures a fault scenario or soak measured, printed at the end of the run (a plugin).

Every CI log thus carries the numbers docs/reliability.md reports. The figures
travel in each test's report (`user_properties`, also written to the JUnit XML),
so the table is complete when the tests run in several processes (pytest-xdist):
the process that prints the summary receives every report.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

Measure = Callable[[str, object], None]


@pytest.fixture
def measure(request: pytest.FixtureRequest) -> Measure:
    """measure(figure, value): keep a measured figure for the end-of-run table (and the JUnit XML)."""

    def record(figure: str, value: object) -> None:
        request.node.user_properties.append((figure, str(value)))

    return record


class MeasuredFigures:
    """Collects the figures from the tests' reports, and prints them by test at the end."""

    def __init__(self) -> None:
        self.measured: list[tuple[str, str, str]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """The teardown report carries everything the test recorded, its fixtures' teardown included."""
        if report.when == "teardown":
            name = report.nodeid.rsplit("::", 1)[-1]
            self.measured += [(name, str(figure), str(value)) for figure, value in report.user_properties]

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        """Print every figure the fault scenarios measured, by test."""
        if not self.measured:
            return
        terminalreporter.section("fault scenarios: measured")
        current = ""
        for test, figure, value in self.measured:
            if test != current:
                terminalreporter.write_line(test)
                current = test
            terminalreporter.write_line(f"    {figure}: {value}")


def pytest_configure(config: pytest.Config) -> None:
    """Register the collector once per run."""
    config.pluginmanager.register(MeasuredFigures(), "measured-figures")
