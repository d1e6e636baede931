"""iotcommon.signals: a stop signal's action runs off the signal handler, so it may take any lock."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from iotcommon.signals import on_stop_signal

pytestmark = pytest.mark.usefixtures("stop_signal_handlers")


def wait_for(event: threading.Event, what: str, timeout_s: float = 5.0) -> None:
    assert event.wait(timeout_s), f"{what} within {timeout_s} s"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_action_takes_a_lock_the_main_thread_held_when_the_signal_came(signum: signal.Signals) -> None:
    held = threading.Lock()  # like Inbox.take()'s, or the one inside Event.wait()
    got_it: list[bool] = []
    ran_on: list[str] = []
    names: list[str] = []
    done = threading.Event()

    def action(name: str) -> None:
        names.append(name)
        ran_on.append(threading.current_thread().name)
        # Run on the signal handler itself, this would wait on its own thread's lock:
        # acquire(timeout) fails instead of hanging the test.
        got_it.append(held.acquire(timeout=2.0))
        if got_it[-1]:
            held.release()
        done.set()

    on_stop_signal(action)
    with held:
        os.kill(os.getpid(), signum)
        deadline = time.monotonic() + 5.0
        while not names and time.monotonic() < deadline:  # the handler runs here, the lock held
            time.sleep(0.001)
    wait_for(done, "the action ran")
    assert got_it == [True]
    assert names == [signum.name]
    assert ran_on != [threading.main_thread().name]
