"""Stop signals (SIGTERM, SIGINT) for the long-running programs."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def on_stop_signal(action: Callable[[str], None]) -> None:
    """Run action(signal name) on a thread of its own at each SIGTERM or SIGINT.

    Python runs a signal handler on the main thread between two bytecodes,
    possibly while that thread holds a lock: inside the bridge's Inbox.take(),
    or inside Event.wait() between waking and returning. A handler that takes
    the same lock itself (Condition.notify(), Event.set()) then waits for its
    own thread forever: a worker sent SIGTERM while idle hung until SIGKILL.
    On a thread of its own, the action takes the lock as soon as the main
    thread lets go of it.
    """

    def handle(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        threading.Thread(target=action, args=(name,), name=f"on-{name}", daemon=True).start()

    for signum in STOP_SIGNALS:
        signal.signal(signum, handle)
