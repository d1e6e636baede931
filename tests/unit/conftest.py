"""Fixtures of the unit tests: the shared fakes of tests/unit/fakes.py. No network, no servers."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
from fakes import FakeClock

from iotcommon.signals import STOP_SIGNALS


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when the code under test sleeps or the test advances it."""
    return FakeClock()


@pytest.fixture
def stop_signal_handlers() -> Iterator[None]:
    """Leave pytest's own SIGTERM/SIGINT handlers as they were after a test installs the programs'."""
    saved = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)
