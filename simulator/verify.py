"""Check what PostgreSQL holds of a run: every unique valid reading once, nothing else, no loss."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

import psycopg

from simulator.pacing import Clock
from simulator.readings import Expected, Key
from simulator.replica import ReplayPosition, wait_for_replay
from simulator.report import Latency, VerifySummary

logger = logging.getLogger(__name__)

StoredRow = tuple[int, datetime, str, float, str, datetime]  # ... plus ingested_at


class VerifyError(Exception):
    """The database cannot be queried (unreachable, or the role may not read the tables)."""


class RunStore(Protocol):
    """Read-only queries about one run's rows (a fake in the unit tests)."""

    def count_readings(self) -> int: ...

    def readings(self) -> list[StoredRow]: ...

    def count_rejected(self) -> int: ...

    def replay_position(self) -> ReplayPosition | None: ...


@dataclass(frozen=True)
class RunIdentity:
    """How a run's rows are found: the variable suffix and a marker in rejected payloads."""

    variable_suffix: str  # e.g. "#r1a2b3c4"; run ids are letters and digits, safe in LIKE
    since: datetime  # nothing of the run was received earlier


class PostgresRunStore:
    """RunStore on a primary or a standby; needs SELECT on readings and rejected_messages (not the bridge role)."""

    def __init__(self, conninfo: str, identity: RunIdentity, *, variable: str = "DATABASE_URL") -> None:
        self._conninfo = conninfo
        self._variable = variable  # the setting the conninfo came from, for errors
        self._identity = identity
        self._conn: psycopg.Connection[Any] | None = None

    def count_readings(self) -> int:
        """Rows of this run in readings."""
        row = self._query(
            'SELECT count(*) FROM readings WHERE variable LIKE %s AND "timestamp" >= %s', self._params()
        )
        return int(row[0][0])

    def readings(self) -> list[StoredRow]:
        """Every row of this run, with its ingested_at."""
        rows = self._query(
            'SELECT sensor_id, "timestamp", variable, value, unit, ingested_at FROM readings '
            'WHERE variable LIKE %s AND "timestamp" >= %s',
            self._params(),
        )
        return [tuple(row) for row in rows]

    def count_rejected(self) -> int:
        """Rejected messages whose payload carries this run's marker."""
        marker = self._identity.variable_suffix.encode()
        row = self._query(
            "SELECT count(*) FROM rejected_messages WHERE received_at >= %s AND position(%s::bytea in payload) > 0",
            (self._identity.since, marker),
        )
        return int(row[0][0])

    def replay_position(self) -> ReplayPosition | None:
        """Where the reader's replay is, if it is a standby (None for a primary)."""
        [(standby, received, replayed)] = self._query(
            "SELECT pg_is_in_recovery(), pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0')::bigint, "
            "pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint",
            (),
        )
        if not standby or self._conn is None:
            return None
        # With a multi-host URL, the server libpq connected to.
        server = f"{self._conn.info.host}:{self._conn.info.port}"
        # A standby that never streamed (restoring from an archive) has received nothing: what it replayed is the mark.
        received = received if received is not None else replayed
        return ReplayPosition(server, int(received or 0), int(replayed or 0))

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()

    def _params(self) -> tuple[str, datetime]:
        return "%" + self._identity.variable_suffix, self._identity.since

    def _query(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            if self._conn is None or self._conn.closed:
                # autocommit: each poll sees the latest commits; read-only so a
                # mistaken URL with write rights still cannot change anything.
                self._conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5)
                self._conn.read_only = True
            return self._conn.execute(query.encode(), params).fetchall()
        except psycopg.Error as exc:
            raise VerifyError(f"cannot query the database ({self._variable}): {str(exc).strip()}") from exc


def verify(
    store: RunStore,
    expected: Mapping[Key, Expected],
    published_at: Mapping[Key, datetime],
    *,
    rejected_expected: int,
    timeout_s: float,
    clock: Clock,
    poll_s: float = 0.25,
    extra_rejected_allowed: bool = False,
    primary_lsn: Callable[[], int | None] = lambda: None,
) -> VerifySummary:
    """Poll until every expected reading and rejection is stored (or timeout_s), then compare.

    On a standby, before comparing, wait (within timeout_s) until it replayed
    the primary's WAL as of then (simulator.replica), and report that wait.

    Args:
        extra_rejected_allowed: True after re-sends: QoS 1 may then store an
            invalid message twice, which is not a loss.
        primary_lsn: the primary's flushed WAL position, None when it cannot be asked.
    """
    started = clock.monotonic()
    while True:
        if store.count_readings() >= len(expected) and store.count_rejected() >= rejected_expected:
            break
        if clock.monotonic() - started >= timeout_s:
            logger.warning("verify: gave up waiting after %.0f s", timeout_s)
            break
        clock.sleep(poll_s)
    waited = clock.monotonic() - started
    replica = wait_for_replay(store, primary_lsn, deadline=started + timeout_s, clock=clock)
    summary = compare(
        store.readings(), expected, published_at,
        rejected_expected=rejected_expected, rejected_found=store.count_rejected(),
        waited_s=waited, extra_rejected_allowed=extra_rejected_allowed,
    )
    return replace(summary, replica=replica)


def compare(
    rows: list[StoredRow],
    expected: Mapping[Key, Expected],
    published_at: Mapping[Key, datetime],
    *,
    rejected_expected: int,
    rejected_found: int,
    waited_s: float,
    extra_rejected_allowed: bool = False,
) -> VerifySummary:
    """The verdict from the stored rows: found, missing, unexpected, mismatched and latency."""
    found = mismatched = unexpected = 0
    latencies: list[float] = []
    for sensor_id, timestamp, variable, value, unit, ingested_at in rows:
        key = (sensor_id, timestamp, variable)
        want = expected.get(key)
        if want is None:
            unexpected += 1
            continue
        found += 1
        if want.value != value or want.unit != unit:
            mismatched += 1
        latencies.append((ingested_at - published_at[key]).total_seconds())
    missing = len(expected) - found
    rejected_ok = rejected_found == rejected_expected or (
        extra_rejected_allowed and rejected_found > rejected_expected
    )
    ok = missing == 0 and unexpected == 0 and mismatched == 0 and rejected_ok
    return VerifySummary(
        expected=len(expected), found=found, missing=missing, unexpected=unexpected, mismatched=mismatched,
        rejected_expected=rejected_expected, rejected_found=rejected_found, waited_s=round(waited_s, 3),
        commit_latency=Latency.of(latencies), ok=ok,
    )
