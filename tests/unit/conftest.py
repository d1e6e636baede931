"""Fixtures of the unit tests (their fakes are plain classes in tests/unit/fakes.py). No network, no servers."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from iotcommon.signals import STOP_SIGNALS


@pytest.fixture
def stop_signal_handlers() -> Iterator[None]:
    """Leave pytest's own SIGTERM/SIGINT handlers as they were after a test installs the programs'."""
    saved = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)
