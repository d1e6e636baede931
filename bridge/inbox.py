"""The hand-off between the MQTT network thread and the writer: messages in arrival order."""

from __future__ import annotations

import logging
import threading
from collections import deque

from bridge.model import Delivery

logger = logging.getLogger(__name__)


class Inbox:
    """A FIFO of deliveries, bounded so a worker's memory is too, whatever the broker does.

    MQTT v5 Receive Maximum (BRIDGE_MAX_IN_FLIGHT) should keep the broker from
    sending more unacknowledged messages than that, but Mosquitto before
    2.0.13 overshoots it once acknowledgements flow ("various fixes around
    inflight quota management", 2.0.13 changelog): measured on Debian 12's
    2.0.11, a worker with Receive Maximum 300 draining a 20,000-message
    backlog held 5,101 at once. So at `limit` deliveries put() waits for room:
    the network thread stops reading, TCP pushes back, and the rest stays in
    the broker's queue where it belongs.

    A put() that finds no room within `room_wait_s` (the writer is stuck on
    an unavailable database) goes ahead, and so do the next ones until the
    inbox is below the limit again: holding up the network thread for longer
    would stop keepalives and heartbeats. Without acknowledgements the broker
    has nothing more to send, so the inbox still grows only by what it had
    already sent.
    """

    def __init__(self, limit: int | None = None, *, room_wait_s: float = 2.0) -> None:
        self._items: deque[Delivery] = deque()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._room = threading.Condition(self._lock)
        self._limit = limit
        self._room_wait_s = room_wait_s
        self._stalled = False
        self.peak = 0  # most deliveries held at once

    def put(self, delivery: Delivery) -> None:
        """Append a delivery, waiting for room while the inbox is full; called from the network thread."""
        overflowed = False
        with self._lock:
            limit = self._limit
            if limit is not None:
                if len(self._items) < limit:
                    self._stalled = False
                elif not self._stalled:
                    overflowed = not self._room.wait_for(lambda: len(self._items) < limit, self._room_wait_s)
                    self._stalled = overflowed
            self._items.append(delivery)
            self.peak = max(self.peak, len(self._items))
            self._ready.notify()
        if overflowed:
            logger.warning(
                "%d messages wait and the writer took none for %.0f s (database unavailable?): "
                "accepting what the broker already sent past the limit", limit, self._room_wait_s,
            )

    def take(self, max_items: int, timeout_s: float) -> list[Delivery]:
        """Up to max_items deliveries, waiting at most timeout_s for the first."""
        with self._lock:
            if not self._items:
                self._ready.wait(timeout_s)
            count = min(max_items, len(self._items))
            taken = [self._items.popleft() for _ in range(count)]
            if taken:
                self._room.notify_all()
            return taken

    def wake(self) -> None:
        """Wake a waiting take() early, e.g. to start draining at shutdown."""
        with self._lock:
            self._ready.notify_all()

    def __len__(self) -> int:
        return len(self._items)
