"""The inbox between the network thread and the writer: order, the bound, and what happens when the writer is stuck."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from fakes import delivery

from bridge.inbox import Inbox
from bridge.model import Delivery


def put_in_thread(inbox: Inbox, *mids: int) -> threading.Thread:
    thread = threading.Thread(target=inbox.put_many, args=([delivery(mid) for mid in mids],), daemon=True)
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


def test_inbox_is_first_in_first_out() -> None:
    inbox = Inbox()
    for mid in range(5):
        inbox.put(delivery(mid))

    assert len(inbox) == 5
    assert [d.mid for d in inbox.take(3, 0.0)] == [0, 1, 2]
    assert [d.mid for d in inbox.take(10, 0.0)] == [3, 4]
    assert len(inbox) == 0


def test_inbox_take_zero_items_takes_nothing() -> None:
    inbox = Inbox()
    inbox.put(delivery(1))

    assert inbox.take(0, 0.0) == []
    assert len(inbox) == 1


def test_inbox_take_on_empty_inbox_times_out_empty() -> None:
    assert Inbox().take(10, 0.0) == []


def test_inbox_take_wakes_when_a_delivery_arrives() -> None:
    inbox = Inbox()
    producer = threading.Thread(target=inbox.put, args=(delivery(9),))

    producer.start()
    taken = inbox.take(10, 30.0)  # returns as soon as the put lands, long before the timeout
    producer.join()

    assert [d.mid for d in taken] == [9]


def test_inbox_wake_ends_a_waiting_take_early() -> None:
    inbox = Inbox()
    results: list[list[Delivery]] = []
    taker = threading.Thread(target=lambda: results.append(inbox.take(10, 30.0)))
    taker.start()

    deadline = time.monotonic() + 5.0
    while taker.is_alive() and time.monotonic() < deadline:
        inbox.wake()  # repeated: the first call may come before take() waits
        taker.join(0.01)

    assert not taker.is_alive(), "wake() did not end take()"
    assert results == [[]]


def test_a_whole_read_handed_over_at_once_still_keeps_to_the_limit() -> None:
    # The fast path hands over everything one read of the socket brought (put_many):
    # what does not fit waits for room, a share at a time, as single puts would.
    inbox = Inbox(limit=3, room_wait_s=30)
    producer = threading.Thread(target=inbox.put_many, args=([delivery(mid) for mid in range(1, 8)],), daemon=True)
    producer.start()
    taken: list[int] = []
    deadline = time.monotonic() + 10
    while len(taken) < 7 and time.monotonic() < deadline:
        taken += [d.mid for d in inbox.take(1, 0.05)]
    producer.join(5)

    assert taken == list(range(1, 8))
    assert inbox.peak == 3, "never more than the limit held, though seven came at once"
