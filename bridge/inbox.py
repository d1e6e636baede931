"""The hand-off between the MQTT network thread and the writer: messages in arrival order."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence

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

    put_many() hands over what one read of the socket brought (bridge/mqtt/fastpath.py:
    at most 64 KiB of messages) under one lock: the room check is made once per
    read, so the inbox may pass `limit` by that much.
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
        self.put_many((delivery,))

    def put_many(self, deliveries: Sequence[Delivery]) -> None:
        """Append deliveries in order, waiting for room while the inbox is full; called from the network thread.

        What does not fit waits, a share at a time, so the bound holds for a whole
        read of the socket as for one message; in the common case (room enough)
        it is one lock for all of them.
        """
        overflowed = False
        start = 0
        with self._lock:
            while start < len(deliveries):
                room, waited_out = self._make_room()
                overflowed |= waited_out
                if room is None:
                    room = len(deliveries) - start  # stalled: what the broker already sent goes in
                self._items.extend(deliveries[start : start + room])
                start += room
                self.peak = max(self.peak, len(self._items))
                self._ready.notify()
        if overflowed:
            logger.warning(
                "%d messages wait and the writer took none for %.0f s (database unavailable?): "
                "accepting what the broker already sent past the limit", self._limit, self._room_wait_s,
            )

    def _make_room(self) -> tuple[int | None, bool]:
        """(how many may go in now, None for "all": no bound or stalled; whether a wait for room ran out).

        Waits while full. Called with the lock held. After a wait that ran out
        (the writer took none for room_wait_s) the inbox stays "stalled", and
        does not wait again until it is below the limit again.
        """
        limit = self._limit
        if limit is None:
            return None, False
        if len(self._items) < limit:
            self._stalled = False
            return limit - len(self._items), False
        if self._stalled:
            return None, False
        if self._room.wait_for(lambda: len(self._items) < limit, self._room_wait_s):
            return limit - len(self._items), False
        self._stalled = True
        return None, True

    def take(self, max_items: int, timeout_s: float) -> list[Delivery]:
        """Up to max_items deliveries, waiting at most timeout_s for the first."""
        with self._lock:
            if not self._items:
                self._ready.wait(timeout_s)
            if len(self._items) <= max_items:
                # The common case while draining: take everything, without holding the
                # lock (and the network thread waiting on it) for one pop per message.
                taken, self._items = list(self._items), deque()
            else:
                taken = [self._items.popleft() for _ in range(max_items)]
            if taken:
                self._room.notify_all()
            return taken

    def wake(self) -> None:
        """Wake a waiting take() early, e.g. to start draining at shutdown."""
        with self._lock:
            self._ready.notify_all()

    def __len__(self) -> int:
        return len(self._items)
