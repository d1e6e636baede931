"""Every test in tests/faults talks to real servers and injects a fault: mark it `integration` and `faults`.

The fixtures are the integration tests' own (tests/fix_servers.py,
fix_replication.py, fix_watchdog.py) plus `measure` (tests/fix_measure.py),
loaded as plugins by tests/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

FAULTS_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test here talks to real servers and injects a fault."""
    for item in items:
        if FAULTS_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.faults)
