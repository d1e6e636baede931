"""The hand-off between the MQTT network thread and the writer: messages in arrival order."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime

from bridge.model import Parsed


@dataclass(frozen=True, slots=True)
class Delivery:
    """One received MQTT message, validated, waiting to be stored and acknowledged."""

    mid: int
    qos: int
    generation: int  # which connection it arrived on; acks never cross connections
    topic: str
    payload: bytes
    received_at: datetime
    parsed: Parsed


class Inbox:
    """A FIFO of deliveries that never blocks the producer.

    It needs no size limit of its own: the broker never has more than
    BRIDGE_MAX_IN_FLIGHT unacknowledged messages out to us (MQTT v5 Receive
    Maximum), and only unacknowledged messages are in here.
    """

    def __init__(self) -> None:
        self._items: deque[Delivery] = deque()
        self._ready = threading.Condition()

    def put(self, delivery: Delivery) -> None:
        """Append a delivery; called from the network thread."""
        with self._ready:
            self._items.append(delivery)
            self._ready.notify()

    def take(self, max_items: int, timeout_s: float) -> list[Delivery]:
        """Up to max_items deliveries, waiting at most timeout_s for the first."""
        with self._ready:
            if not self._items:
                self._ready.wait(timeout_s)
            count = min(max_items, len(self._items))
            return [self._items.popleft() for _ in range(count)]

    def wake(self) -> None:
        """Wake a waiting take() early, e.g. to start draining at shutdown."""
        with self._ready:
            self._ready.notify_all()

    def discard_older_than(self, generation: int) -> int:
        """Drop deliveries of earlier connections (the broker resends them); return how many."""
        with self._ready:
            kept = [d for d in self._items if d.generation >= generation]
            dropped = len(self._items) - len(kept)
            self._items = deque(kept)
            return dropped

    def __len__(self) -> int:
        return len(self._items)
