"""--verify on a replica: wait until the standby has replayed what the primary committed, and say so.

Counting rows on a standby already waits for replication (verify polls until
every reading is there), but once the counts are reached the standby may still
lack later commits of the run: rejected messages, or rows that would make the
verdict "unexpected". So verify then waits until the standby has replayed the
primary's WAL as of that moment (pg_current_wal_flush_lsn() on DATABASE_URL),
or, when the primary cannot be asked, the WAL the standby had received: under
synchronous replication every acknowledged commit is in it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import psycopg

from simulator.pacing import Clock
from simulator.report import ReplicaWait

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5


@dataclass(frozen=True)
class ReplayPosition:
    """Where a standby is: the WAL it has received and the WAL it has replayed (bytes from 0/0)."""

    server: str  # host:port, as the standby reports it
    received: int
    replayed: int


class Standby(Protocol):
    """The reader's replay position; None when the reader is not a standby."""

    def replay_position(self) -> ReplayPosition | None: ...


def lsn_text(lsn: int) -> str:
    """A WAL position as PostgreSQL writes it (0/3000148)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def wait_for_replay(
    standby: Standby, primary_lsn: Callable[[], int | None], *, deadline: float, clock: Clock, poll_s: float = 0.1,
) -> ReplicaWait | None:
    """None when the reader is a primary; else wait (until the monotonic `deadline`) for the standby to catch up."""
    position = standby.replay_position()
    if position is None:
        return None
    started = clock.monotonic()
    target, source = primary_lsn(), "primary"
    if target is None:
        target, source = position.received, "standby"
    while position.replayed < target and clock.monotonic() < deadline:
        clock.sleep(poll_s)
        latest = standby.replay_position()
        if latest is None:  # promoted meanwhile: it replays nothing more
            break
        position = latest
    caught_up = position.replayed >= target
    if not caught_up:
        logger.warning("verify: the standby %s has not replayed up to %s", position.server, lsn_text(target))
    return ReplicaWait(
        server=position.server, target_lsn=lsn_text(target), target_source=source,
        waited_s=round(clock.monotonic() - started, 3), caught_up=caught_up,
        behind_bytes=max(target - position.replayed, 0),
    )


def primary_flush_lsn(conninfo: str) -> int | None:
    """The primary's flushed WAL position (DATABASE_URL); None, with a warning, when it cannot say."""
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            row = conn.execute(
                "SELECT CASE WHEN pg_is_in_recovery() THEN NULL "
                "ELSE pg_wal_lsn_diff(pg_current_wal_flush_lsn(), '0/0')::bigint END"
            ).fetchone()
    except psycopg.Error as exc:
        logger.warning("verify: cannot ask the primary (DATABASE_URL) for its WAL position: %s; "
                       "waiting for the WAL the standby received instead", _first_line(exc))
        return None
    if row is None or row[0] is None:
        logger.warning("verify: DATABASE_URL leads to a standby too; waiting for the WAL the standby received instead")
        return None
    return int(row[0])


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
