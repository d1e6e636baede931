"""bridge.store.indoubt and the sink against real PostgreSQL: the marker row's locking, and unconfirmed COMMITs.

The logic step by step is in tests/unit/test_store_indoubt.py; the failovers end to
end in tests/faults/test_failover.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from fix_replication import bridge_url_of

from bridge.errors import SinkUnavailable
from bridge.model import Delivery, Limits
from bridge.stats import Stats
from bridge.store.database import Database
from bridge.store.indoubt import CREATE_MARKER, swap_marker
from bridge.store.sink import PostgresSink, WriteResult
from bridge.validation import parse_message
from devstack import traffic
from devstack.processes import wait_until
from devstack.replication import ReplicatedPostgres

CLIENT = "indoubt-1"


def _marker(conn: psycopg.Connection[Any]) -> uuid.UUID | None:
    row = conn.execute("SELECT batch_id FROM bridge_progress WHERE client_id = %s", (CLIENT,)).fetchone()
    return row[0] if row else None


@pytest.mark.parametrize("earlier_commits", [True, False])
def test_the_swap_waits_for_the_transaction_holding_the_row_and_reads_what_it_left(
    bridge_database_url: str, earlier_commits: bool,
) -> None:
    """What makes "still in progress" settle by itself: the swap returns only once the earlier one is over."""
    first, second = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(bridge_database_url, autocommit=True) as setup:
        setup.execute(CREATE_MARKER, (CLIENT,))
        setup.execute("UPDATE bridge_progress SET batch_id = NULL WHERE client_id = %s", (CLIENT,))
    with psycopg.connect(bridge_database_url) as earlier, psycopg.connect(bridge_database_url) as later, \
            ThreadPoolExecutor(1) as pool:
        assert swap_marker(earlier, client_id=CLIENT, batch_id=first) is None
        swapped: Future[uuid.UUID | None] = pool.submit(swap_marker, later, client_id=CLIENT, batch_id=second)
        with pytest.raises(TimeoutError):
            swapped.result(timeout=0.5)  # blocked on the row
        earlier.commit() if earlier_commits else earlier.rollback()

        assert swapped.result(timeout=10) == (first if earlier_commits else None)
        later.commit()
        assert _marker(later) == second


def test_a_missing_marker_row_is_created_by_the_batch_that_finds_it_gone(
    bridge_database_url: str, admin_database_url: str,
) -> None:
    with psycopg.connect(admin_database_url, autocommit=True) as admin:
        admin.execute("DELETE FROM bridge_progress WHERE client_id = %s", (CLIENT,))
    batch_id = uuid.uuid4()
    with psycopg.connect(bridge_database_url) as conn:
        assert swap_marker(conn, client_id=CLIENT, batch_id=batch_id) is None
        conn.commit()
        assert _marker(conn) == batch_id


def _batch(messages: list[tuple[str, bytes]]) -> list[Delivery]:
    now = datetime.now(UTC)
    return [Delivery(mid, 1, 1, topic, payload, now, parse_message(topic, payload, now=now, limits=Limits()))
            for mid, (topic, payload) in enumerate(messages, start=1)]


@pytest.fixture
def sink(shared_replicated_postgres: ReplicatedPostgres) -> Iterator[tuple[PostgresSink, Stats]]:
    stats = Stats()
    database = Database(bridge_url_of(shared_replicated_postgres), application_name=CLIENT, statement_timeout_ms=2000)
    sink = PostgresSink(database, client_id=CLIENT, watcher=stats, now=lambda: datetime.now(UTC))
    try:
        yield sink, stats
    finally:
        sink.close()


def test_a_commit_the_standby_never_confirmed_is_not_taken_as_stored_and_is_confirmed_later(
    shared_replicated_postgres: ReplicatedPostgres, sink: tuple[PostgresSink, Stats],
) -> None:
    """COMMIT cancelled while it waits for a stopped standby: it returns (committed on the primary only) with a
    warning. The batch must stay unacknowledged until a COMMIT the standby confirms, and never be written twice.
    """
    pair, (postgres_sink, stats) = shared_replicated_postgres, sink
    sent = traffic.build(40, invalid_share=0.25)
    batch = _batch(sent.messages)
    postgres_sink.check()
    pair.standby.stop()
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(postgres_sink.write, batch)
        wait_until(lambda: stats.commit_started_at is not None, 10, message="the COMMIT waiting for the standby")
        with psycopg.connect(pair.primary.url(), autocommit=True) as admin:
            admin.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (CLIENT,))
        with pytest.raises(SinkUnavailable, match="without the standby's confirmation"):
            first.result(timeout=10)
        assert traffic.counts(pair.primary.url()) == (len(sent.expected), sent.invalid), "committed on the primary"

        retry = pool.submit(postgres_sink.write, batch)
        wait_until(lambda: stats.commit_started_at is not None, 10, message="the confirming COMMIT waiting")
        with pytest.raises(TimeoutError):
            retry.result(timeout=0.5)  # not acknowledged while the standby is away
        pair.standby.start()
        result = retry.result(timeout=30)

    assert result == WriteResult(stored=len(sent.expected), rejected=sent.invalid), "the first attempt's result"
    pair.wait_replayed()
    traffic.assert_stored_exactly(pair.standby.url(), sent, timeout=5)


def test_a_standby_holding_commits_shows_as_a_commit_wait(
    shared_replicated_postgres: ReplicatedPostgres, sink: tuple[PostgresSink, Stats],
) -> None:
    pair, (postgres_sink, stats) = shared_replicated_postgres, sink
    batch = _batch(traffic.build(10).messages)
    postgres_sink.check()
    pair.freeze_wal_sender()
    with ThreadPoolExecutor(1) as pool:
        writing = pool.submit(postgres_sink.write, batch)
        wait_until(lambda: stats.commit_wait_s(datetime.now(UTC)) > 1.0, 10, message="a COMMIT waiting over 1 s")
        assert stats.heartbeat(client_id=CLIENT, at=datetime.now(UTC), commit_wait_warn_s=1.0).commit_stalled

        pair.thaw_wal_sender()

        assert writing.result(timeout=10).stored == 10
    assert stats.commit_started_at is None
