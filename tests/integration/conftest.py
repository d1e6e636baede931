"""Every test in tests/integration talks to real servers: mark it `integration`.

The fixtures themselves are pytest plugins loaded by tests/conftest.py
(fix_servers, fix_replication, fix_watchdog, fix_measure), shared with tests/faults.
"""

from __future__ import annotations

from pathlib import Path

import pytest

INTEGRATION_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test in tests/integration as `integration`."""
    for item in items:
        if INTEGRATION_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)
