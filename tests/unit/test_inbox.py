"""The inbox between the network thread and the writer: order, the bound, and what happens when the writer is stuck."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

import pytest

from bridge.inbox import Delivery, Inbox
from bridge.model import Parsed

AT = datetime(2026, 1, 1, tzinfo=UTC)


def delivery(mid: int, generation: int = 1) -> Delivery:
    return Delivery(mid, 1, generation, "sensors/1/readings", b"{}", AT, Parsed())


def put_in_thread(inbox: Inbox, *mids: int) -> threading.Thread:
    thread = threading.Thread(target=lambda: [inbox.put(delivery(mid)) for mid in mids], daemon=True)
    thread.start()
    return thread


def test_deliveries_come_out_in_arrival_order_in_batches() -> None:
    inbox = Inbox()
    for mid in range(1, 6):
        inbox.put(delivery(mid))
    assert [d.mid for d in inbox.take(3, 0)] == [1, 2, 3]
    assert [d.mid for d in inbox.take(3, 0)] == [4, 5]
    assert inbox.take(3, 0) == []
    assert inbox.peak == 5


def test_a_full_inbox_holds_up_the_producer_until_the_writer_takes() -> None:
    inbox = Inbox(limit=2, room_wait_s=30)
    inbox.put(delivery(1))
    inbox.put(delivery(2))
    producer = put_in_thread(inbox, 3)
    producer.join(0.2)  # bounded: it must still be waiting
    assert producer.is_alive() and len(inbox) == 2

    assert [d.mid for d in inbox.take(1, 0)] == [1]
    producer.join(5)
    assert not producer.is_alive()
    assert [d.mid for d in inbox.take(5, 0)] == [2, 3]
    assert inbox.peak == 2, "never more than the limit at once"


def test_a_stuck_writer_holds_up_the_producer_only_once_then_the_inbox_accepts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The writer is stuck (database down): one wait of room_wait_s, then no more
    # waiting, so the network thread keeps serving keepalives and heartbeats.
    caplog.set_level(logging.WARNING, logger="bridge.inbox")
    inbox = Inbox(limit=2, room_wait_s=0.05)
    started = time.monotonic()
    for mid in range(1, 6):
        inbox.put(delivery(mid))
    assert time.monotonic() - started >= 0.05, "the first put past the limit waited for room"
    assert (len(inbox), len(overflow_warnings(caplog))) == (5, 1)

    # Once the writer catches up below the limit, the bound applies again.
    inbox.take(4, 0)
    inbox.put(delivery(6))
    started = time.monotonic()
    inbox.put(delivery(7))
    assert time.monotonic() - started >= 0.05, "full again: the producer waited"
    assert (len(inbox), len(overflow_warnings(caplog))) == (3, 2)


def overflow_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The inbox's warnings that it went past its limit."""
    return [r.getMessage() for r in caplog.records if "past the limit" in r.getMessage()]
