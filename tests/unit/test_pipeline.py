"""The writer: batching, store-then-ack in arrival order, retry with backoff, refusals, shutdown."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import timedelta

import pytest
from fakes import T0, FakeClock, delivery

from bridge.errors import SinkMisconfigured, SinkRefused, SinkUnavailable
from bridge.inbox import Inbox
from bridge.model import Delivery
from bridge.pipeline import MAX_WAIT_S, Pipeline
from bridge.stats import Stats
from bridge.store.sink import WriteResult
from iotcommon.backoff import Backoff

LINGER_S = 0.05


class FakeSink:
    """Records each write. Scripted to be unavailable or to refuse readings of given messages.

    Like PostgreSQL, it refuses a whole batch when one reading in it is bad, and it
    accepts a message once that message holds only rejections.
    """

    def __init__(
        self,
        clock: FakeClock,
        events: list[tuple[str, list[int]]],
        *,
        unavailable: int = 0,
        unavailable_calls: Sequence[int] = (),
        refuse_mids: Sequence[int] = (),
        refuse_rejections: int = 0,
        duplicate_mids: Sequence[int] = (),
        conflict_mids: Sequence[int] = (),
        checks_unavailable: int = 0,
        misconfigured: bool = False,
    ) -> None:
        self.clock = clock
        self.checks_unavailable = checks_unavailable  # the first N checks fail as an outage
        self.misconfigured = misconfigured  # every check fails as no waiting would fix
        self.checked_at: list[float] = []
        self.events = events
        self.unavailable = unavailable  # the first N calls fail
        self.unavailable_calls = set(unavailable_calls)  # these call numbers fail
        self.refuse_mids = set(refuse_mids)
        self.refuse_rejections = refuse_rejections
        self.duplicate_mids = set(duplicate_mids)
        self.conflict_mids = set(conflict_mids)
        self.before_write: Callable[[], None] = lambda: None
        self.calls: list[list[Delivery]] = []
        self.committed: list[list[Delivery]] = []
        self.committed_at: list[float] = []

    def check(self) -> None:
        self.checked_at.append(self.clock.t)
        if self.misconfigured:
            raise SinkMisconfigured("relation \"readings\" does not exist: apply schema.sql")
        if self.checks_unavailable > 0:
            self.checks_unavailable -= 1
            raise SinkUnavailable("connection refused")

    def write(self, batch: Sequence[Delivery]) -> WriteResult:
        self.check()
        self.before_write()
        batch = list(batch)
        call = len(self.calls)
        self.calls.append(batch)
        mids = [d.mid for d in batch]
        if self.unavailable > 0 or call in self.unavailable_calls:
            self.unavailable = max(0, self.unavailable - 1)
            self.events.append(("unavailable", mids))
            raise SinkUnavailable("connection refused")
        if any(d.mid in self.refuse_mids and d.parsed.rows for d in batch):
            self.events.append(("refused", mids))
            raise SinkRefused('value out of range for type double precision')
        if self.refuse_rejections and not any(d.parsed.rows for d in batch):
            self.refuse_rejections -= 1
            self.events.append(("refused", mids))
            raise SinkRefused("invalid byte sequence")
        self.events.append(("write", mids))
        self.committed.append(batch)
        self.committed_at.append(self.clock.t)
        result = WriteResult()
        for d in batch:
            rows = len(d.parsed.rows)
            if d.mid in self.duplicate_mids:
                result.duplicates += rows
            elif d.mid in self.conflict_mids:
                result.conflicts += rows  # PostgresSink counts these apart from rejections
            else:
                result.stored += rows
            result.rejected += len(d.parsed.rejections)
        return result


class FakeAcker:
    """Records acked message ids (skipping earlier connections is the consumer's job, tested there)."""

    def __init__(self, events: list[tuple[str, list[int]]]) -> None:
        self.events = events
        self.acked: list[int] = []

    def ack(self, batch: Sequence[Delivery]) -> int:
        mids = [d.mid for d in batch]
        self.acked.extend(mids)
        self.events.append(("ack", mids))
        return len(mids)


class ScriptedInbox:
    """Deliveries that arrive at given fake-clock times; waiting in take() moves the clock.

    Sets `stop` when the clock reaches stop_at, as the SIGTERM handler would.
    """

    def __init__(
        self, clock: FakeClock, arrivals: list[tuple[float, Delivery]], stop: threading.Event, *, stop_at: float
    ) -> None:
        self.clock = clock
        self.arrivals = sorted(arrivals, key=lambda arrival: arrival[0])
        self.stop = stop
        self.stop_at = stop_at
        self.timeouts: list[float] = []

    def _arrived(self) -> int:
        return sum(1 for at, _ in self.arrivals if at <= self.clock.t)

    def take(self, max_items: int, timeout_s: float) -> list[Delivery]:
        assert self.clock.t < 1000, "the pipeline never stopped"
        assert len(self.timeouts) < 10_000, "the pipeline spins without waiting"
        self.timeouts.append(timeout_s)
        if not self._arrived():
            next_at = self.arrivals[0][0] if self.arrivals else float("inf")
            wake_at = min(self.clock.t + timeout_s, next_at)
            if wake_at >= self.stop_at and not self.stop.is_set():
                wake_at = self.stop_at
                self.stop.set()
            self.clock.t = max(self.clock.t, wake_at)
        count = min(max_items, self._arrived())
        taken = [delivery for _, delivery in self.arrivals[:count]]
        del self.arrivals[:count]
        return taken

    def __len__(self) -> int:
        return self._arrived()


class Harness:
    """A pipeline wired to fakes; sink options go to FakeSink.

    With `arrivals`, the inbox is a ScriptedInbox on the fake clock; without, a real Inbox.
    """

    def __init__(
        self,
        *,
        batch_size: int = 3,
        linger_s: float = 0.0,
        backoff: Backoff | None = None,
        arrivals: list[tuple[float, Delivery]] | None = None,
        stop_at: float = 10.0,
        **sink_options: object,
    ) -> None:
        self.clock = FakeClock()
        self.events: list[tuple[str, list[int]]] = []
        self.sink = FakeSink(self.clock, self.events, **sink_options)  # type: ignore[arg-type]
        self.acker = FakeAcker(self.events)
        self.stats = Stats()
        self.backoff = backoff or Backoff(initial_s=0.1, max_s=0.5, jitter=0.0)
        self.stop = threading.Event()
        self.inbox = Inbox()
        self.scripted = ScriptedInbox(self.clock, arrivals or [], self.stop, stop_at=stop_at)
        self.pipeline = Pipeline(
            self.inbox if arrivals is None else self.scripted,  # type: ignore[arg-type]
            self.sink,
            self.acker,
            stats=self.stats,
            batch_size=batch_size,
            linger_s=linger_s,
            backoff=self.backoff,
            now=self.clock.now,
            monotonic=self.clock.monotonic,
            sleep=self.clock.sleep,
        )

    def run(self, *, drain_deadline: Callable[[], float | None] = lambda: None) -> None:
        self.pipeline.run(self.stop, drain_deadline=drain_deadline)

    def committed_mids(self) -> list[list[int]]:
        return [[d.mid for d in batch] for batch in self.sink.committed]


# --- batching ---------------------------------------------------------------------------------


def test_full_batches_flush_at_once() -> None:
    harness = Harness(batch_size=3, arrivals=[(0.0, delivery(mid)) for mid in range(7)])

    harness.run()

    assert harness.committed_mids() == [[0, 1, 2], [3, 4, 5], [6]]
    assert harness.sink.committed_at[:2] == [0.0, 0.0]


def test_a_delivery_finding_the_writer_idle_is_written_at_once() -> None:
    arrivals = [(0.0, delivery(0)), (0.3, delivery(1)), (0.31, delivery(2))]
    harness = Harness(batch_size=100, arrivals=arrivals)

    harness.run()

    assert harness.committed_mids() == [[0], [1], [2]]
    assert harness.sink.committed_at == [pytest.approx(0.0), pytest.approx(0.3), pytest.approx(0.31)]


def test_what_arrives_during_a_commit_makes_the_next_batch() -> None:
    arrivals = [(0.0, delivery(0)), *((0.001 * n, delivery(n)) for n in range(1, 6))]
    harness = Harness(batch_size=100, arrivals=arrivals)
    harness.sink.before_write = lambda: harness.clock.sleep(0.01)  # each commit takes 10 ms

    harness.run()

    assert harness.committed_mids() == [[0], [1, 2, 3, 4, 5]]
    assert harness.sink.committed_at == [pytest.approx(0.01), pytest.approx(0.02)]


def test_a_backlog_is_written_in_full_batches() -> None:
    harness = Harness(batch_size=4, arrivals=[(0.0, delivery(mid)) for mid in range(10)])

    harness.run()

    assert [len(batch) for batch in harness.committed_mids()] == [4, 4, 2]


def test_linger_holds_a_partial_batch_for_more() -> None:
    harness = Harness(batch_size=100, linger_s=LINGER_S,
                      arrivals=[(0.0, delivery(0)), (0.0, delivery(1)), (0.0, delivery(2))])

    harness.run()

    assert harness.committed_mids() == [[0, 1, 2]]
    assert harness.sink.committed_at == [pytest.approx(LINGER_S)]


def test_linger_counts_from_the_first_message_of_the_batch() -> None:
    arrivals = [(0.0, delivery(0)), (0.01, delivery(1)), (0.04, delivery(2)), (0.08, delivery(3))]
    harness = Harness(batch_size=100, linger_s=LINGER_S, arrivals=arrivals)

    harness.run()

    assert harness.committed_mids() == [[0, 1, 2], [3]]
    assert harness.sink.committed_at == [pytest.approx(0.05), pytest.approx(0.13)]


def test_linger_ends_early_when_the_batch_is_full() -> None:
    arrivals = [(0.0, delivery(0)), (0.01, delivery(1)), (0.02, delivery(2)), (0.03, delivery(3))]
    harness = Harness(batch_size=3, linger_s=LINGER_S, arrivals=arrivals)

    harness.run()

    assert harness.committed_mids() == [[0, 1, 2], [3]]
    assert harness.sink.committed_at == [pytest.approx(0.02), pytest.approx(0.03 + LINGER_S)]


def test_idle_pipeline_waits_without_spinning_and_writes_nothing() -> None:
    harness = Harness(arrivals=[], stop_at=2.0)

    harness.run()

    assert harness.sink.calls == []
    assert harness.scripted.timeouts[:4] == [MAX_WAIT_S] * 4
    assert harness.clock.t == pytest.approx(2.0)


def test_long_linger_still_looks_at_stop_often() -> None:
    linger_s = 4 * MAX_WAIT_S
    harness = Harness(batch_size=100, linger_s=linger_s, arrivals=[(0.0, delivery(0))], stop_at=100.0)

    harness.run()

    assert harness.sink.committed_at == [pytest.approx(linger_s)]
    assert max(harness.scripted.timeouts) == MAX_WAIT_S
    assert harness.scripted.timeouts[1:5] == [MAX_WAIT_S] * 4


def test_in_flight_counts_batch_and_inbox() -> None:
    harness = Harness(batch_size=2)
    for mid in range(5):
        harness.inbox.put(delivery(mid))
    seen: list[int] = []
    harness.sink.before_write = lambda: seen.append(harness.stats.in_flight)
    harness.stop.set()

    harness.run()

    assert seen == [5, 3, 1]
    assert harness.stats.in_flight == 0


# --- store, then ack in arrival order ---------------------------------------------------------


def test_acks_follow_the_write_in_arrival_order() -> None:
    harness = Harness(batch_size=2, arrivals=[(0.0, delivery(mid)) for mid in range(5)])

    harness.run()

    assert harness.events == [
        ("write", [0, 1]), ("ack", [0, 1]),
        ("write", [2, 3]), ("ack", [2, 3]),
        ("write", [4]), ("ack", [4]),
    ]
    assert harness.acker.acked == [0, 1, 2, 3, 4]


def test_flush_acks_nothing_while_the_database_is_unavailable_and_backs_off() -> None:
    harness = Harness(unavailable=6, backoff=Backoff(initial_s=0.1, max_s=0.5, jitter=0.0))
    db_ok_while_waiting: list[bool] = []

    def watch(seconds: float) -> None:
        assert harness.acker.acked == []
        db_ok_while_waiting.append(harness.stats.db_ok)

    harness.clock.on_sleep = watch

    assert harness.pipeline.flush([delivery(0), delivery(1)]) is True

    assert harness.clock.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5, 0.5])
    assert db_ok_while_waiting == [False] * 6
    assert [kind for kind, _ in harness.events] == ["unavailable"] * 6 + ["write", "ack"]
    assert harness.acker.acked == [0, 1]
    assert harness.stats.db_errors == 6
    assert harness.stats.db_ok is True
    assert harness.backoff.attempts == 0  # reset after the success


def test_backoff_applies_jitter_between_retries() -> None:
    harness = Harness(unavailable=3, backoff=Backoff(initial_s=0.1, max_s=5.0, jitter=0.5, rand=lambda: 1.0))

    harness.pipeline.flush([delivery(0)])

    assert harness.clock.sleeps == pytest.approx([0.05, 0.1, 0.2])


def test_after_an_outage_every_message_is_stored_and_acked_exactly_once() -> None:
    # The database goes away for the 2nd and 3rd write attempts, while messages keep arriving.
    arrivals = [(0.01 * mid, delivery(mid)) for mid in range(20)]
    harness = Harness(batch_size=4, unavailable_calls=(1, 2), arrivals=arrivals, stop_at=5.0)

    harness.run()

    assert harness.acker.acked == list(range(20))
    stored = Counter(d.mid for batch in harness.sink.committed for d in batch)
    assert stored == Counter(range(20))
    assert harness.stats.stored == 20
    assert harness.stats.db_errors == 2
    assert harness.stats.db_ok is True


def test_recovery_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    harness = Harness(unavailable=2)

    with caplog.at_level(logging.INFO, logger="bridge.pipeline"):
        harness.pipeline.flush([delivery(0)])
        harness.pipeline.flush([delivery(1)])

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "database unavailable" in warnings[0].getMessage()
    recovered = [r.getMessage() for r in caplog.records if "available again" in r.getMessage()]
    assert recovered == ["database available again after 2 attempts"]


def test_retry_keeps_deliveries_of_an_earlier_connection() -> None:
    # A reconnect while the database is down: the broker may resend generation 1,
    # or may have lost it (SIGKILLed before its last save). Only storing it is safe.
    harness = Harness(unavailable=1)
    batch = [delivery(0, generation=1), delivery(1, generation=1), delivery(2, generation=2)]

    assert harness.pipeline.flush(batch) is True

    assert harness.committed_mids() == [[0, 1, 2]]


# --- refused data -----------------------------------------------------------------------------


def test_refused_batch_is_stored_one_by_one_with_the_refused_message_as_a_rejection() -> None:
    harness = Harness(refuse_mids=(1,))
    batch = [delivery(0), delivery(1, rows=2, rejections=1), delivery(2)]

    assert harness.pipeline.flush(batch) is True

    assert harness.events == [
        ("refused", [0, 1, 2]),
        ("write", [0]),
        ("refused", [1]),
        ("write", [1]),
        ("write", [2]),
        ("ack", [0, 1, 2]),
    ]
    refused = harness.sink.committed[1][0]
    assert refused.parsed.rows == ()
    assert refused.parsed.rejections[0].payload == b"payload 1"
    assert refused.parsed.rejections[0].reason.startswith("database refused")
    assert "out of range" in refused.parsed.rejections[0].reason
    assert refused.parsed.rejections[1:] == delivery(1, rows=2, rejections=1).parsed.rejections
    assert (refused.mid, refused.qos, refused.generation, refused.topic) == (1, 1, 1, "sensors/5/readings")
    assert harness.stats.stored == 2
    assert harness.stats.rejected == 2
    assert harness.stats.batches == 1


def test_refused_rejection_is_retried_as_unavailable() -> None:
    harness = Harness(refuse_mids=(0,), refuse_rejections=1)

    assert harness.pipeline.flush([delivery(0)]) is True

    assert harness.stats.db_errors == 1
    assert len(harness.clock.sleeps) == 1
    assert harness.sink.committed[-1][0].parsed.rows == ()
    assert harness.acker.acked == [0]


def test_outage_during_one_by_one_fallback_stores_each_message_once() -> None:
    # Calls: 0 [0,1,2] refused; 1 [0] ok; 2 [1] refused; 3 [1 as rejection] ok; 4 [2] unavailable.
    harness = Harness(refuse_mids=(1,), unavailable_calls=(4,))

    assert harness.pipeline.flush([delivery(0, rejections=1), delivery(1), delivery(2)]) is True

    stored = Counter(d.mid for batch in harness.sink.committed for d in batch)
    assert stored == Counter({0: 1, 1: 1, 2: 1}), "a message committed twice stores its rejections twice"
    assert harness.acker.acked == [0, 1, 2]
    assert harness.stats.stored == 2
    assert harness.stats.rejected == 2


# --- shutdown ---------------------------------------------------------------------------------


def test_flush_gives_up_at_the_deadline_and_acks_nothing(caplog: pytest.LogCaptureFixture) -> None:
    harness = Harness(unavailable=100, backoff=Backoff(initial_s=0.1, max_s=5.0, jitter=0.0))

    with caplog.at_level(logging.ERROR, logger="bridge.pipeline"):
        flushed = harness.pipeline.flush([delivery(0), delivery(1)], deadline=lambda: 0.5)

    assert flushed is False
    assert harness.clock.sleeps == pytest.approx([0.1, 0.2])  # a third wait (0.4 s) would end after 0.5
    assert harness.acker.acked == []
    assert harness.sink.committed == []
    assert harness.stats.batches == 0
    assert any("giving up on 2 messages" in r.getMessage() for r in caplog.records)


def test_run_returns_when_the_drain_deadline_passes_leaving_messages_unacked() -> None:
    harness = Harness(batch_size=2, unavailable=100)
    for mid in range(5):
        harness.inbox.put(delivery(mid))
    harness.stop.set()

    harness.run(drain_deadline=lambda: harness.clock.t)

    assert harness.acker.acked == []
    assert len(harness.inbox) == 3
    assert harness.clock.sleeps == []


def test_run_with_stop_set_drains_the_inbox_and_returns() -> None:
    harness = Harness(batch_size=2)
    for mid in range(5):
        harness.inbox.put(delivery(mid))
    harness.stop.set()

    harness.run()

    assert harness.committed_mids() == [[0, 1], [2, 3], [4]]
    assert harness.acker.acked == [0, 1, 2, 3, 4]
    assert len(harness.inbox) == 0
    assert harness.stats.in_flight == 0


def test_run_with_stop_set_and_empty_inbox_returns_at_once() -> None:
    harness = Harness()
    harness.stop.set()

    harness.run()

    assert harness.sink.calls == []
    assert harness.clock.t == 0.0


def test_stop_mid_batch_flushes_the_partial_batch_without_waiting() -> None:
    harness = Harness(batch_size=100, linger_s=LINGER_S, arrivals=[(0.0, delivery(0)), (0.0, delivery(1))],
                      stop_at=0.01)

    harness.run()

    assert harness.committed_mids() == [[0, 1]]
    assert harness.sink.committed_at == [pytest.approx(0.01)]
    assert harness.acker.acked == [0, 1]


# --- counters ---------------------------------------------------------------------------------


def test_stats_add_up_what_each_batch_did() -> None:
    harness = Harness(batch_size=10, duplicate_mids=(1,), conflict_mids=(2,))
    batch = [
        delivery(0, rows=3),
        delivery(1, rows=2),
        delivery(2, rows=1, rejections=2),
        delivery(3, rows=0, rejections=1),
    ]

    harness.pipeline.flush(batch)
    harness.clock.t = 7.0
    harness.pipeline.flush([delivery(4)])

    stats = harness.stats
    assert (stats.stored, stats.duplicates, stats.conflicts, stats.rejected) == (4, 2, 1, 3)
    assert stats.batches == 2
    assert stats.db_ok is True
    assert stats.db_errors == 0
    assert stats.last_commit_at == T0 + timedelta(seconds=7)


def test_stats_show_database_down_until_a_commit() -> None:
    harness = Harness(unavailable=100)

    assert harness.pipeline.flush([delivery(0)], deadline=lambda: 0.0) is False

    assert harness.stats.db_ok is False
    assert harness.stats.db_errors == 1
    assert harness.stats.last_commit_at is None

    harness.sink.unavailable = 0
    assert harness.pipeline.flush([delivery(0)]) is True
    assert harness.stats.db_ok is True
    assert harness.stats.last_commit_at == T0


# --- a database that was down at start ---------------------------------------------------------


def test_the_start_up_check_reports_an_unavailable_database_and_raises() -> None:
    harness = Harness(arrivals=[], checks_unavailable=1)

    with pytest.raises(SinkUnavailable):
        harness.pipeline.check_database()

    assert harness.stats.db_ok is False
    assert harness.sink.checked_at == [0.0]


def test_the_start_up_check_leaves_an_available_database_reported_up() -> None:
    harness = Harness(arrivals=[])

    harness.pipeline.check_database()

    assert harness.stats.db_ok is True
    assert harness.sink.checked_at == [0.0]


def test_the_start_up_check_lets_a_misconfiguration_through_without_reporting_an_outage() -> None:
    harness = Harness(arrivals=[], misconfigured=True)

    with pytest.raises(SinkMisconfigured):
        harness.pipeline.check_database()

    assert harness.stats.db_ok is True


def test_the_pipeline_alone_decides_on_availability_whatever_stats_held() -> None:
    harness = Harness(arrivals=[], stop_at=2.0)
    harness.stats.db_ok = False  # a report, not a decision: the pipeline does not probe for it

    harness.run()

    assert harness.sink.checked_at == []


def test_idle_worker_looks_for_the_database_on_the_backoff_schedule_and_reports_it_back() -> None:
    harness = Harness(arrivals=[], stop_at=5.0, checks_unavailable=4)
    with pytest.raises(SinkUnavailable):
        harness.pipeline.check_database()  # the start-up check, the first of the four that fail

    harness.run()

    assert harness.stats.db_ok is True, "the database came back and nobody noticed"
    # 0.1, 0.2, 0.4 s apart (Backoff without jitter), then the one that succeeds and no more.
    assert harness.sink.checked_at == pytest.approx([0.0, 0.0, 0.1, 0.3, 0.7], abs=1e-9)
    assert harness.stats.db_errors == 3


def test_idle_worker_with_the_database_up_never_probes_it() -> None:
    harness = Harness(arrivals=[], stop_at=2.0)

    harness.run()

    assert harness.sink.checked_at == []


def test_messages_received_while_the_database_is_down_at_start_are_stored_once_it_is_back() -> None:
    harness = Harness(arrivals=[(0.0, delivery(1)), (0.0, delivery(2))], checks_unavailable=5)
    with pytest.raises(SinkUnavailable):
        harness.pipeline.check_database()

    harness.run()

    assert harness.acker.acked == [1, 2]
    assert harness.committed_mids() == [[1, 2]]
    assert harness.stats.db_ok is True


def test_a_misconfiguration_found_once_the_database_answers_stops_the_pipeline_without_acking() -> None:
    harness = Harness(arrivals=[(0.0, delivery(1))], misconfigured=True)

    with pytest.raises(SinkMisconfigured):
        harness.run()

    assert harness.acker.acked == []
