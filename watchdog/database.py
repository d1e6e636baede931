"""The database probes: a fresh connection each cycle, within a timeout, to the primary and to the reader.

The primary's probe runs SELECT 1, and when replication is watched it reads
what watchdog/replication.py judges: pg_stat_replication (which needs
pg_read_all_stats), synchronous_standby_names, the WAL position, the system
identifier and the timeline. The reader's probe asks whether a standby answered.
The partitions probe reads the catalog's partitions of readings and pg_partman's premake.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

from iotcommon.partitions import LAYOUT, over_ranges
from watchdog.checks import PartitionFacts
from watchdog.replication import PrimaryFacts, ReaderFacts, StandbyFacts

# The timeline of a primary is the first 8 hex digits of its current WAL file's name: it changes the
# moment a standby is promoted, while pg_control_checkpoint() says so only after the next checkpoint.
_PRIMARY = """
SELECT pg_is_in_recovery(),
       (SELECT system_identifier FROM pg_control_system()),
       CASE WHEN NOT pg_is_in_recovery()
            THEN ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
       CASE WHEN NOT pg_is_in_recovery() THEN pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint END,
       current_setting('synchronous_standby_names'),
       pg_has_role('pg_read_all_stats', 'USAGE')
"""
# Physical standbys only: a logical replication client's WAL sender is connected to a database.
_STANDBYS = """
SELECT r.application_name, coalesce(host(r.client_addr), 'local socket'), r.state, r.sync_state,
       pg_wal_lsn_diff(r.replay_lsn, '0/0')::bigint
FROM pg_stat_replication AS r JOIN pg_stat_activity AS a USING (pid)
WHERE a.datname IS NULL
ORDER BY r.application_name, r.client_addr
"""


@dataclass(frozen=True, slots=True)
class PrimaryProbe:
    """The primary's probe: the error (None when it answered), how long it took, and what it said."""

    error: str | None
    elapsed_ms: float = 0.0
    facts: PrimaryFacts | None = None  # only when replication is watched
    facts_error: str | None = None  # it answered SELECT 1, but the replication status could not be read


@dataclass(frozen=True, slots=True)
class ReaderProbe:
    """The reader's probe: the error (None when it answered), how long it took, and which server it was."""

    error: str | None
    elapsed_ms: float = 0.0
    facts: ReaderFacts | None = None


def probe_database(conninfo: str, *, timeout_s: float, application_name: str, replication: bool) -> PrimaryProbe:
    """SELECT 1 on a fresh connection, and the replication facts if asked; the reason (no password) on failure."""
    started = time.monotonic()
    try:
        with _connect(conninfo, timeout_s=timeout_s, application_name=application_name) as conn:
            conn.execute("SELECT 1").fetchone()
            elapsed_ms = (time.monotonic() - started) * 1000
            if not replication:
                return PrimaryProbe(None, elapsed_ms)
            try:
                return PrimaryProbe(None, elapsed_ms, _primary_facts(conn))
            except psycopg.Error as exc:
                return PrimaryProbe(None, elapsed_ms, facts_error=f"cannot read the replication status: {_reason(exc)}")
    except psycopg.Error as exc:
        return PrimaryProbe(f"cannot run SELECT 1: {_reason(exc)}")


def probe_reader(conninfo: str, *, timeout_s: float, application_name: str) -> ReaderProbe:
    """Whether DATABASE_READ_URL answers, which server did, and whether it is a standby."""
    started = time.monotonic()
    try:
        with _connect(conninfo, timeout_s=timeout_s, application_name=application_name) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            facts = ReaderFacts(_server(conn), bool(row and row[0]))
    except psycopg.Error as exc:
        return ReaderProbe(f"cannot run SELECT pg_is_in_recovery(): {_reason(exc)}")
    return ReaderProbe(None, (time.monotonic() - started) * 1000, facts)


def probe_partitions(conninfo: str, *, timeout_s: float, application_name: str) -> PartitionFacts | str:
    """What the catalog says about readings' partitions (and pg_partman's premake, where granted), or the error."""
    try:
        with _connect(conninfo, timeout_s=timeout_s, application_name=application_name) as conn:
            return _partition_facts(conn)
    except psycopg.Error as exc:
        return f"cannot read the partitions of readings: {_reason(exc)}"


def _partition_facts(conn: psycopg.Connection[Any]) -> PartitionFacts:
    row = conn.execute(LAYOUT, {"table": "readings"}).fetchone()
    if not row or not row[0]:
        return PartitionFacts(partitioned=False)
    ahead, newest = conn.execute(
        over_ranges("SELECT count(*) FILTER (WHERE lower > now()), max(upper) FROM ({ranges}) AS r"),
        {"table": "readings"},
    ).fetchone() or (0, None)
    premake = None
    # pg_partman's config, granted to iot_watchdog by `python -m bridge partition setup`.
    if conn.execute("SELECT to_regclass('partman.part_config') IS NOT NULL "
                    "AND has_table_privilege('partman.part_config', 'SELECT')").fetchone() == (True,):
        found = conn.execute("SELECT premake FROM partman.part_config WHERE parent_table = 'public.readings'"
                             ).fetchone()
        premake = int(found[0]) if found else None
    return PartitionFacts(partitioned=True, ahead=int(ahead), newest_upper=newest, premake=premake)


@contextmanager
def _connect(conninfo: str, *, timeout_s: float, application_name: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(
        conninfo,
        autocommit=True,
        # libpq counts whole seconds and treats 1 as 2; the statement timeout covers the queries.
        connect_timeout=max(math.ceil(timeout_s), 2),
        application_name=application_name,
        options=f"-c statement_timeout={int(timeout_s * 1000)}",
    ) as conn:
        yield conn


def _primary_facts(conn: psycopg.Connection[Any]) -> PrimaryFacts:
    row = conn.execute(_PRIMARY).fetchone()
    if row is None:
        raise psycopg.DataError("the replication status query returned no row")
    in_recovery, system_id, timeline, wal_lsn, sync_names, sees = row
    standbys = tuple(
        StandbyFacts(str(name or ""), str(address), str(state or "?"), str(sync_state or "?"),
                     None if lsn is None else int(lsn))
        for name, address, state, sync_state, lsn in conn.execute(_STANDBYS).fetchall()
    ) if sees and not in_recovery else ()
    return PrimaryFacts(
        server=_server(conn), in_recovery=bool(in_recovery), system_id=int(system_id),
        timeline=None if timeline is None else int(timeline), wal_lsn=None if wal_lsn is None else int(wal_lsn),
        sync_names=str(sync_names), sees_replication=bool(sees), standbys=standbys,
    )


def _server(conn: psycopg.Connection[Any]) -> str:
    """host:port libpq connected to: with a multi-host URL, the server that accepted."""
    return f"{conn.info.host}:{conn.info.port}"


def _reason(exc: psycopg.Error) -> str:
    # libpq's messages name host and port but never the password.
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return "; ".join(lines[:2]) or type(exc).__name__
