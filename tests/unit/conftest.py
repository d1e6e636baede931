"""Fixtures of the unit tests: the shared fakes of tests/unit/fakes.py. No network, no servers."""

from __future__ import annotations

import pytest
from fakes import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when the code under test sleeps or the test advances it."""
    return FakeClock()
